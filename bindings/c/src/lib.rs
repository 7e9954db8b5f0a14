//! placeholder until the C binding lands
