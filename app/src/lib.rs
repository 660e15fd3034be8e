//! The `condenser` binary's library half: the desktop app, so its views can be tested (egui
//! snapshot tests render each panel alone). The CLI lives in the binary and calls into this.

pub mod gui;
