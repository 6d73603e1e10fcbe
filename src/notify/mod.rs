//! The notify stage.
