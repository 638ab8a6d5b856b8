package snapshot

import "slices"

// Index returns id's position in a sealed set (0 <= i < Len) and whether it
// is a member, so callers can mark members in a bitset of Len bits.
func (s *IDSet) Index(id string) (int, bool) {
	if s == nil || !s.sealed {
		return -1, false
	}
	i, found := slices.BinarySearchFunc(s.keys, keyOf(id), compareKeys)
	if !found {
		return -1, false
	}
	return i, true
}
