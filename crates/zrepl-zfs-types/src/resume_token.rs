//! Decoding of `receive_resume_token` values (being written).
