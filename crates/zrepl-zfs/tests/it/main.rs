//! zrepl-zfs against a mock `zfs` script: argv construction, error classification from real
//! OpenZFS stderr strings, batching, stream lifecycle. No ZFS needed.

mod mock;
mod ops;
mod streams;
