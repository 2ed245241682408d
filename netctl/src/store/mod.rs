//! Where the state is kept: today one locked, atomically written JSON file.

pub mod state_file;
