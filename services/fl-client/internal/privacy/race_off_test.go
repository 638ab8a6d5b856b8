//go:build !race

package privacy

// raceEnabled reports a build with the race detector, which slows the
// per-coordinate loops tenfold.
const raceEnabled = false
