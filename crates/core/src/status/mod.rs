//! Conditions and status derivation (pure): what the controllers write is computed here
//! from what they observed.

pub mod conditions;
pub mod master;
