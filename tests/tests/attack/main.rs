//! The attack suite: what an unprivileged client (a guest, a free account) could make the
//! server hold or refuse others, against the real binary over real sockets; one module per area,
//! one test (at least) per hole found.

#[path = "../common/mod.rs"]
mod common;
#[path = "../json_client/mod.rs"]
mod json_client;

mod accounts;
mod buffers;
mod conn;
mod rooms;
mod smuggling;
mod stomp_wire;
mod storage;
