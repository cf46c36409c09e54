//! The foreign protocols on the same listener: matchbox_server's and
//! PeerJS's, message by message and bad input by bad input, and what the
//! history and the metrics make of them.

mod matchbox;
mod peerjs;
