//! The pure model: what netctl's state is made of and the rules it follows — state types,
//! address management, port specs, names, options, requests and their validation. No I/O.

pub mod addr;
pub mod features;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod frame;
pub mod ids;
pub mod instance;
pub mod ipam;
pub mod ipam6;
pub mod links;
pub mod names;
pub mod networks;
pub mod options;
pub mod overlay;
pub mod paths;
pub mod ports;
pub mod runopts;
pub mod state;
pub mod text;
