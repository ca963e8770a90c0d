//! The attack suite: what an unprivileged client (a guest, a free account) could make the
//! server hold or refuse others, one test per hole found, each bound flooded over real sockets.

mod buffers;
