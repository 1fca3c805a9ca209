//! eventgate-actors
