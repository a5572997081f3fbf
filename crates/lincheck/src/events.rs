//! The history of one partition as a doubly linked list of call and return
//! events in time order, from which operations are unlinked ("lifted") as
//! the search linearizes them and relinked, in reverse order, as it
//! backtracks (Knuth's dancing links, as in Porcupine).
//!
//! Events are sorted by time; at equal times calls come before returns, so
//! an operation returning at the very instant another is called counts as
//! concurrent with it (the lenient reading). An operation that never
//! returned has no return event: nothing ever forces it to be linearized.

/// Marks the end of the list.
const NIL: u32 = u32::MAX;
/// The sentinel node before the first event.
const HEAD: u32 = 0;

/// One node of the list: a call or return of operation `op`.
#[derive(Clone, Copy, Debug)]
struct Node {
    prev: u32,
    next: u32,
    op: u32,
    is_call: bool,
}

/// What sits at a position of the list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The call of operation `op` (its position within the partition).
    Call(usize),
    /// The return of operation `op`.
    Return(usize),
}

/// A position in the list: a node, or the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor(u32);

/// The event list of one partition.
pub(crate) struct EventList {
    nodes: Vec<Node>,
    /// Per operation: its call node and, if it returned, its return node.
    op_nodes: Vec<(u32, Option<u32>)>,
}

impl EventList {
    /// Builds the list from each operation's `(call, ret)` times in
    /// microseconds (`ret == None`: never returned).
    pub(crate) fn new(times: &[(u64, Option<u64>)]) -> Self {
        assert!(times.len() < (u32::MAX / 2) as usize, "events: history too long");
        // (time, 0 = call / 1 = return, op) sorts calls before returns at
        // equal times, and is deterministic.
        let mut order: Vec<(u64, u8, u32)> = Vec::with_capacity(times.len() * 2);
        for (op, &(call, ret)) in times.iter().enumerate() {
            order.push((call, 0, op as u32));
            if let Some(ret) = ret {
                assert!(ret >= call, "events: operation {op} returns before its call");
                order.push((ret, 1, op as u32));
            }
        }
        order.sort_unstable();
        let mut nodes = Vec::with_capacity(order.len() + 1);
        nodes.push(Node { prev: NIL, next: NIL, op: u32::MAX, is_call: false });
        let mut op_nodes = vec![(NIL, None); times.len()];
        for (position, &(_, kind, op)) in order.iter().enumerate() {
            let id = position as u32 + 1;
            nodes[id as usize - 1].next = id;
            nodes.push(Node { prev: id - 1, next: NIL, op, is_call: kind == 0 });
            if kind == 0 {
                op_nodes[op as usize].0 = id;
            } else {
                op_nodes[op as usize].1 = Some(id);
            }
        }
        EventList { nodes, op_nodes }
    }

    /// The first event still in the list.
    pub(crate) fn first(&self) -> Cursor {
        Cursor(self.nodes[HEAD as usize].next)
    }

    /// The event after `cursor`, which must not be the end.
    pub(crate) fn next(&self, cursor: Cursor) -> Cursor {
        Cursor(self.nodes[cursor.0 as usize].next)
    }

    /// The position just after operation `op`'s call (which must be linked).
    pub(crate) fn after_call(&self, op: usize) -> Cursor {
        Cursor(self.nodes[self.op_nodes[op].0 as usize].next)
    }

    /// The event at `cursor`, or `None` at the end.
    pub(crate) fn event(&self, cursor: Cursor) -> Option<Event> {
        if cursor.0 == NIL {
            return None;
        }
        let node = &self.nodes[cursor.0 as usize];
        let op = node.op as usize;
        Some(if node.is_call { Event::Call(op) } else { Event::Return(op) })
    }

    /// Unlinks operation `op`'s call and return.
    pub(crate) fn lift(&mut self, op: usize) {
        let (call, ret) = self.op_nodes[op];
        self.unlink(call);
        if let Some(ret) = ret {
            self.unlink(ret);
        }
    }

    /// Relinks operation `op`'s call and return; operations must be
    /// unlifted in the reverse of the order they were lifted.
    pub(crate) fn unlift(&mut self, op: usize) {
        let (call, ret) = self.op_nodes[op];
        if let Some(ret) = ret {
            self.relink(ret);
        }
        self.relink(call);
    }

    /// Calls still linked before the first linked return, in order: the
    /// operations that could be linearized next.
    pub(crate) fn minimal_calls(&self) -> Vec<usize> {
        let mut calls = Vec::new();
        let mut cursor = self.first();
        while let Some(Event::Call(op)) = self.event(cursor) {
            calls.push(op);
            cursor = self.next(cursor);
        }
        calls
    }

    fn unlink(&mut self, id: u32) {
        let Node { prev, next, .. } = self.nodes[id as usize];
        self.nodes[prev as usize].next = next;
        if next != NIL {
            self.nodes[next as usize].prev = prev;
        }
    }

    fn relink(&mut self, id: u32) {
        let Node { prev, next, .. } = self.nodes[id as usize];
        assert!(self.nodes[prev as usize].next == next, "events: relinked out of order");
        self.nodes[prev as usize].next = id;
        if next != NIL {
            self.nodes[next as usize].prev = id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(list: &EventList) -> Vec<Event> {
        let mut events = Vec::new();
        let mut cursor = list.first();
        while let Some(event) = list.event(cursor) {
            events.push(event);
            cursor = list.next(cursor);
        }
        events
    }

    #[test]
    fn events_sort_by_time_with_calls_first_at_equal_times() {
        // op 0: [10, 20]; op 1: [20, 30] (called as op 0 returns); op 2: [5, -].
        let list = EventList::new(&[(10, Some(20)), (20, Some(30)), (5, None)]);
        use Event::*;
        assert_eq!(walk(&list), vec![Call(2), Call(0), Call(1), Return(0), Return(1)]);
        assert_eq!(list.minimal_calls(), vec![2, 0, 1]);
    }

    #[test]
    fn lift_and_unlift_in_reverse_order_restore_the_list() {
        let mut list = EventList::new(&[(0, Some(10)), (1, Some(2)), (3, Some(4)), (5, None)]);
        let original = walk(&list);
        list.lift(1);
        list.lift(0);
        list.lift(3);
        use Event::*;
        assert_eq!(walk(&list), vec![Call(2), Return(2)]);
        assert_eq!(list.minimal_calls(), vec![2]);
        list.unlift(3);
        list.unlift(0);
        assert_eq!(walk(&list), vec![Call(0), Call(2), Return(2), Call(3), Return(0)]);
        assert_eq!(list.after_call(0), list.next(list.first()));
        list.unlift(1);
        assert_eq!(walk(&list), original);
    }

    #[test]
    #[should_panic(expected = "out of order")]
    fn unlifting_out_of_order_is_caught() {
        // Adjacent calls: relinking the first before the second is an error.
        let mut list = EventList::new(&[(0, Some(10)), (1, Some(11))]);
        list.lift(0);
        list.lift(1);
        list.unlift(0);
    }
}
