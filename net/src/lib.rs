//! Host side of rvmm networking: tap devices (`IFF_VNET_HDR`, offloads, multi-queue), attaching
//! them to a bridge such as `br0` and removing them again, and MAC address helpers. It knows
//! nothing about virtio; the virtio-net device in `devices` moves frames between these taps and
//! guest memory.
