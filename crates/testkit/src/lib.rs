//! Test harness: network namespaces, shoald processes, assert_eventually
