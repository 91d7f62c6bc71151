//! The subcommands that do not fit on one screen of `main`, one file per concern.

pub mod bench;
pub mod model;
