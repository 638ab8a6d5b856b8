package importer

import (
	"container/heap"
	"context"
	"time"
)

// item is one queued accession in memory: the durable record says what to
// do, the item only orders the work.
type item struct {
	key       string // record key
	project   string
	seq       uint64 // the record's Seq when it was queued
	notBefore time.Time
}

// flight is an attempt in progress.
type flight struct {
	project string
	cancel  context.CancelCauseFunc
	done    chan struct{} // closed when the worker is finished with the item
}

// queue holds the work not yet handed to a worker: ready items by Seq
// (first queued, first served) and delayed items by due time.
type queue struct {
	ready   seqHeap
	delayed dueHeap
}

// push adds an item to ready or delayed by its due time.
func (q *queue) push(it *item) {
	if it.notBefore.IsZero() {
		heap.Push(&q.ready, it)
	} else {
		heap.Push(&q.delayed, it)
	}
}

// pop returns the first ready item, promoting delayed items that are due at
// now; without one it returns nil and how long until the next delayed item
// is due (negative: nothing delayed).
func (q *queue) pop(now time.Time) (*item, time.Duration) {
	for len(q.delayed) > 0 && !q.delayed[0].notBefore.After(now) {
		heap.Push(&q.ready, heap.Pop(&q.delayed))
	}
	if len(q.ready) > 0 {
		return heap.Pop(&q.ready).(*item), 0
	}
	if len(q.delayed) > 0 {
		return nil, q.delayed[0].notBefore.Sub(now)
	}
	return nil, -1
}

// drop removes every item of project.
func (q *queue) drop(project string) {
	keep := func(items []*item) []*item {
		out := items[:0]
		for _, it := range items {
			if it.project != project {
				out = append(out, it)
			}
		}
		clear(items[len(out):])
		return out
	}
	q.ready = keep(q.ready)
	q.delayed = keep(q.delayed)
	heap.Init(&q.ready)
	heap.Init(&q.delayed)
}

type seqHeap []*item

func (h seqHeap) Len() int           { return len(h) }
func (h seqHeap) Less(i, j int) bool { return h[i].seq < h[j].seq }
func (h seqHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *seqHeap) Push(x any)        { *h = append(*h, x.(*item)) }
func (h *seqHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}

type dueHeap []*item

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	if !h[i].notBefore.Equal(h[j].notBefore) {
		return h[i].notBefore.Before(h[j].notBefore)
	}
	return h[i].seq < h[j].seq
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(*item)) }
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return it
}
