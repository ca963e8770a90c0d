//! The Parley chat server as a library: the `parley` binary (`main.rs`, its command line) and
//! the fuzz targets (`fuzz/`, through [`fuzzing`]) are built on it. Only what they use is
//! public; ARCHITECTURE.md describes the modules and their layers.

#![deny(missing_docs)]

mod acl;
mod app;
mod auth;
#[doc(hidden)]
pub mod benching;
mod bus;
mod clock;
mod config;
mod endpoints;
#[doc(hidden)]
pub mod fuzzing;
mod health;
mod http;
mod hub;
mod journal;
mod logs;
mod metrics;
mod park;
mod store;
mod ws;

// What the command line (`main.rs`) uses.
pub use app::{open_store, serve};
pub use auth::password::hash_now;
pub use auth::{check_new_account, reserved_for_guests, Keys};
pub use config::{LogFormat, ServeArgs};
pub use logs::WithConn;
pub use store::{AdminRecord, AuditEntry};
