//! The MyVNPost customer-partner API (vnpost-api.md).
