package snapshot

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
)

// IDSet is a compact membership set of ids, used to serve frozen cohorts of
// millions of members. Each id is kept as a 128-bit key (the first 16 bytes
// of its SHA-256) in a sorted slice, about 16 bytes per id whatever its
// length, and looked up by binary search.
//
// Two different ids share a key only by a SHA-256 collision on 128 bits. For
// n ids the chance that any non-member is mistaken for a member is about
// n/2^128 per lookup (below 10^-32 for a million-member cohort), and crafting
// a colliding id is computationally infeasible, so the set is exact for all
// practical purposes.
//
// Build a set with Add, then call Seal. A sealed set is read-only and safe
// for concurrent use by multiple goroutines; Add and Seal are not.
type IDSet struct {
	keys   []idKey
	sealed bool
}

type idKey struct{ hi, lo uint64 }

func compareKeys(a, b idKey) int {
	if c := cmp.Compare(a.hi, b.hi); c != 0 {
		return c
	}
	return cmp.Compare(a.lo, b.lo)
}

func keyOf(id string) idKey { return keyOfBytes([]byte(id)) }

func keyOfBytes(id []byte) idKey {
	sum := sha256.Sum256(id)
	return idKey{binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:16])}
}

// NewIDSet returns an empty set with room for capacity ids.
func NewIDSet(capacity int) *IDSet {
	return &IDSet{keys: make([]idKey, 0, max(capacity, 0))}
}

// Add inserts id. The set must be sealed again before lookups.
func (s *IDSet) Add(id string) {
	s.keys = append(s.keys, keyOf(id))
	s.sealed = false
}

// addBytes inserts an id held in a reused buffer.
func (s *IDSet) addBytes(id []byte) {
	s.keys = append(s.keys, keyOfBytes(id))
	s.sealed = false
}

// Seal sorts the set and drops duplicates, making it ready for Contains.
func (s *IDSet) Seal() {
	if s.sealed {
		return
	}
	slices.SortFunc(s.keys, compareKeys)
	s.keys = slices.CompactFunc(s.keys, func(a, b idKey) bool { return a == b })
	s.sealed = true
}

// Contains reports whether id is in the set. An unsealed set contains
// nothing, so a set that was never sealed fails closed.
func (s *IDSet) Contains(id string) bool {
	if s == nil || !s.sealed {
		return false
	}
	_, found := slices.BinarySearchFunc(s.keys, keyOf(id), compareKeys)
	return found
}

// Len returns the number of distinct ids in a sealed set (before Seal: the
// number of ids added).
func (s *IDSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.keys)
}
