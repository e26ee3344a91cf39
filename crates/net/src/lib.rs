//! Host networking over rtnetlink: ingress bridge, task network namespaces, veth, addresses
