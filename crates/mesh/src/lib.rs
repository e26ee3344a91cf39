//! The routing mesh data plane: routing table, listeners, balancer, forwarder, metrics
