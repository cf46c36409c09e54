//! Unmodified foreign clients against the server's protocol adapters, a file per client.

mod matchbox_client;
