//! placeholder until the Python binding lands
