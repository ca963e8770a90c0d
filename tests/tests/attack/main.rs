//! The attack suite: hostile clients against the real binary over real sockets (issue 13), one
//! module per area.

mod accounts;
