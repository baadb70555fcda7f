//! virtio-input tablet: config space, event encoding, and events delivered through
//! virtio-queue's mock driver, directly and through an activated device.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use virtio_queue::desc::split::Descriptor as SplitDescriptor;
use virtio_queue::desc::RawDescriptor;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Address, Bytes, GuestAddress};
use vnc::InputSink;

use super::*;
use crate::GuestMemoryMmap;

const F_WRITE: u16 = 2;
const BUFS: u64 = 0x10_0000;

fn memory() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x40_0000)]).unwrap()
}

fn cfg(t: &mut Tablet, select: u8, subsel: u8) -> (u8, Vec<u8>) {
    t.write_config(0, &[select, subsel]);
    let mut size = [0u8];
    t.read_config(2, &mut size);
    let mut payload = vec![0u8; usize::from(size[0])];
    t.read_config(8, &mut payload);
    (size[0], payload)
}

#[test]
fn config_space_describes_an_absolute_tablet() {
    let mut t = Tablet::new();
    assert_eq!(t.device_type(), 18);
    assert_eq!(t.queue_max_sizes().len(), 2);
    assert_eq!(cfg(&mut t, CFG_ID_NAME, 0).1, NAME);
    assert_eq!(cfg(&mut t, CFG_EV_BITS, EV_ABS as u8).1, [0b11]);
    let keys = cfg(&mut t, CFG_EV_BITS, EV_KEY as u8).1;
    assert_eq!(keys.len(), 0x112 / 8 + 1);
    assert_eq!(keys[0x110 / 8], 0b111, "left, right, middle");
    let abs = cfg(&mut t, CFG_ABS_INFO, ABS_Y as u8).1;
    assert_eq!(abs.len(), 20);
    assert_eq!(u32::from_le_bytes(abs[4..8].try_into().unwrap()), ABS_MAX);
    assert_eq!(cfg(&mut t, CFG_ABS_INFO, 5).0, 0, "no such axis");
    assert_eq!(cfg(&mut t, 0x7f, 0).0, 0, "unknown selector reads size 0");
    let mut past = [0xaau8; 4];
    t.read_config(200, &mut past);
    assert_eq!(past, [0; 4]);
}

#[test]
fn pointer_reports_scale_to_the_axis_range_and_send_button_changes() {
    let e = pointer_events(1023, 0, 0b001, 0, 1024, 768);
    assert_eq!(e[0], event(EV_ABS, ABS_X, ABS_MAX));
    assert_eq!(e[1], event(EV_ABS, ABS_Y, 0));
    assert_eq!(e[2], event(EV_KEY, BTN_LEFT, 1));
    assert_eq!(*e.last().unwrap(), event(EV_SYN, SYN_REPORT, 0));
    let e = pointer_events(512, 384, 0b100, 0b001, 1024, 768);
    assert_eq!(e[0], event(EV_ABS, ABS_X, 512 * ABS_MAX / 1023));
    assert!(e.contains(&event(EV_KEY, BTN_LEFT, 0)));
    assert!(e.contains(&event(EV_KEY, BTN_RIGHT, 1)));
    assert_eq!(e.len(), 5);
    // Off-screen positions clamp; a zero-sized screen does not divide by zero.
    assert_eq!(
        pointer_events(5000, 0, 0, 0, 100, 0)[0],
        event(EV_ABS, ABS_X, ABS_MAX)
    );
    let wheel = pointer_events(0, 0, 0x10, 0, 10, 10);
    assert!(wheel.contains(&event(EV_REL, REL_WHEEL, u32::MAX)));
}

fn post(mock: &MockSplitQueue<'_, GuestMemoryMmap>, n: u16) {
    let descs: Vec<RawDescriptor> = (0..n)
        .map(|i| RawDescriptor::from(SplitDescriptor::new(BUFS + 8 * u64::from(i), 8, F_WRITE, 0)))
        .collect();
    for (i, d) in descs.iter().enumerate() {
        mock.add_desc_chains(std::slice::from_ref(d), i as u16)
            .unwrap();
    }
}

#[test]
fn events_fill_posted_buffers_and_wait_for_more() {
    let mem = memory();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let mut q: Queue = mock.create_queue().unwrap();
    post(&mock, 2);
    let mut pending: VecDeque<[u8; 8]> = (1..=3u32).map(|v| event(EV_ABS, ABS_X, v)).collect();
    assert!(fill_event_queue(&mem, &mut q, &mut pending));
    assert_eq!(pending.len(), 1, "one event waits for a buffer");
    for i in 0..2u64 {
        let e: [u8; 8] = mem.read_obj(GuestAddress(BUFS + 8 * i)).unwrap();
        assert_eq!(e, event(EV_ABS, ABS_X, i as u32 + 1));
    }
    let used_idx: u16 = mem.read_obj(mock.used_addr().unchecked_add(2)).unwrap();
    assert_eq!(used_idx, 2);
    assert!(
        !fill_event_queue(&mem, &mut q, &mut pending),
        "no buffers, no interrupt"
    );
}

#[derive(Default)]
struct Count(AtomicUsize);
impl VirtioInterrupt for Count {
    fn trigger(&self, t: VirtioInterruptType) -> io::Result<()> {
        assert_eq!(t, VirtioInterruptType::Queue(0));
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn an_active_tablet_delivers_vnc_pointer_events() {
    let mem = memory();
    let mock = MockSplitQueue::create(&mem, GuestAddress(0x1000), 16);
    let q: Queue = mock.create_queue().unwrap();
    let mut t = Tablet::new();
    let input = t.input();
    input.pointer(1, 1, 0, 10, 10); // no driver yet: dropped
    assert!(!input.driver_active());
    t.ack_features(t.features());
    let irq = Arc::new(Count::default());
    let kick = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    t.activate(
        GuestMemoryAtomic::new(mem.clone()),
        irq.clone(),
        vec![ActiveQueue {
            index: 0,
            queue: q,
            kick: kick.try_clone().unwrap(),
        }],
    )
    .unwrap();
    assert!(input.driver_active());
    input.pointer(9, 0, 1, 10, 10); // X, Y, BTN_LEFT, SYN: 4 events, no buffers yet
    assert_eq!(irq.0.load(Ordering::SeqCst), 0);
    post(&mock, 4);
    kick.write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while irq.0.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        irq.0.load(Ordering::SeqCst) > 0,
        "the kick flushed the events"
    );
    let got: Vec<[u8; 8]> = (0..4u64)
        .map(|i| mem.read_obj(GuestAddress(BUFS + 8 * i)).unwrap())
        .collect();
    assert_eq!(
        got,
        [
            event(EV_ABS, ABS_X, ABS_MAX),
            event(EV_ABS, ABS_Y, 0),
            event(EV_KEY, BTN_LEFT, 1),
            event(EV_SYN, SYN_REPORT, 0)
        ]
    );
    assert!(t.reset());
    assert!(!input.driver_active());
}
