//! An RFB (VNC) server: protocol versions 3.3–3.8, authentication, encodings and input events.
//!
//! It serves any [`Framebuffer`]-like source and forwards keys and pointer events to an input
//! sink; it has no knowledge of KVM, so it is tested with in-memory streams and fake screens.
