//! placeholder; see DESIGN.md
