//! The attack suite: hostile clients against the real binary over real sockets — each test
//! shows one way a client (or a failing disk) could hurt the server, and that it no longer can.

#[path = "../common/mod.rs"]
mod common;
#[path = "../json_client/mod.rs"]
mod json_client;

mod stomp_wire;
mod storage;
