package egress

import (
	"fmt"
	"slices"
	"strings"
)

// Channel names a kind of egress (docs/egress.md).
type Channel string

// Channels.
const (
	CohortResults Channel = "cohort_results"
	ImagingStatus Channel = "imaging_status"
	TaskResult    Channel = "task_result"
	FLMetrics     Channel = "fl_metrics"
	FLWeights     Channel = "fl_weights"
)

// Channels lists every channel.
var Channels = []Channel{CohortResults, ImagingStatus, TaskResult, FLMetrics, FLWeights}

// Mode is a channel's review mode.
type Mode string

// Review modes, from the least to the most strict.
const (
	Release Mode = "release"
	Hold    Mode = "hold"
	Refuse  Mode = "refuse"
)

// strictness orders the modes.
func (m Mode) strictness() int {
	switch m {
	case Hold:
		return 1
	case Refuse:
		return 2
	}
	return 0
}

// Stricter returns the stricter of m and o.
func (m Mode) Stricter(o Mode) Mode {
	if o.strictness() > m.strictness() {
		return o
	}
	return m
}

// ParseMode reads a mode name.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.TrimSpace(s)); m {
	case Release, Hold, Refuse:
		return m, nil
	}
	return "", fmt.Errorf("%q is not one of release, hold, refuse", s)
}

// Policy maps channels to review modes; a channel not named is released. A
// nil Policy releases everything. Policies come from EGRESS_REVIEW today and
// may be merged with the site policy file's [review] section by Merge.
type Policy map[Channel]Mode

// ParsePolicy reads "channel=mode,channel=mode" (EGRESS_REVIEW). Every
// problem is reported in the one error.
func ParsePolicy(s string) (Policy, error) {
	p := Policy{}
	var problems []string
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, mode, ok := strings.Cut(part, "=")
		if !ok {
			problems = append(problems, fmt.Sprintf("%q is not channel=mode", part))
			continue
		}
		ch := Channel(strings.TrimSpace(name))
		if !slices.Contains(Channels, ch) {
			problems = append(problems, fmt.Sprintf("%q is not a channel (one of %s)", ch, channelList()))
			continue
		}
		m, err := ParseMode(mode)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", ch, err))
			continue
		}
		p[ch] = m
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s", strings.Join(problems, "; "))
	}
	return p, nil
}

// Mode is the mode for ch.
func (p Policy) Mode(ch Channel) Mode {
	if m, ok := p[ch]; ok {
		return m
	}
	return Release
}

// Merge returns, per channel, the stricter of p and o.
func (p Policy) Merge(o Policy) Policy {
	out := Policy{}
	for _, ch := range Channels {
		if m := p.Mode(ch).Stricter(o.Mode(ch)); m != Release {
			out[ch] = m
		}
	}
	return out
}

// String is the EGRESS_REVIEW form of p, channels in a fixed order.
func (p Policy) String() string {
	var parts []string
	for _, ch := range Channels {
		if m, ok := p[ch]; ok {
			parts = append(parts, string(ch)+"="+string(m))
		}
	}
	return strings.Join(parts, ",")
}

func channelList() string {
	names := make([]string, len(Channels))
	for i, c := range Channels {
		names[i] = string(c)
	}
	return strings.Join(names, ", ")
}
