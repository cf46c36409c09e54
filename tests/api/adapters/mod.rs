//! The foreign protocols on the same listener: matchbox_server's and
//! PeerJS's, message by message and bad input by bad input, what the
//! history and the metrics make of them, and the unmodified clients
//! (matchbox_socket) against them, and what stays private.

mod matchbox;
mod matchbox_client;
mod peerjs;
mod privacy;
