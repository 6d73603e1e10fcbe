//! The controller stage.
