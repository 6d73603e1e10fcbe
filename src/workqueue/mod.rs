//! The workqueue stage.
