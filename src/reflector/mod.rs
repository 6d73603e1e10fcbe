//! The reflector stage.
