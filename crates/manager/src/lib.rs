//! Manager: control API, orchestrators, scheduler, allocator, dispatcher
