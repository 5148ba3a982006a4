//! zrepl's YAML configuration (zrepl 0.7 schema), parsed strictly into validated runtime types.
pub mod cron;
pub mod decode;
pub mod error;
pub mod grid;
pub mod timestamp;
pub mod units;
pub mod yaml;
