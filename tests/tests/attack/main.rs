//! The attack suite: what an unprivileged client (a guest, a free account) could make the
//! server hold or refuse others, against the real binary over real sockets; one module per area,
//! one test (at least) per hole found.

mod accounts;
mod buffers;
mod conn;
mod rooms;
mod smuggling;
