package gpu

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
)

// Summary is the JSON-ready state of the host's GPUs, for /gpus and health.
type Summary struct {
	Available bool     `json:"available"`        // at least one GPU can be used
	Reason    string   `json:"reason,omitempty"` // why none can, when Available is false
	Devices   []Device `json:"devices"`          // never null
}

// Report reads inv into a Summary. A missing driver, an NVML failure and a
// host without GPUs are all reported in it, never returned as errors.
func Report(ctx context.Context, inv Inventory) Summary {
	devs, err := inv.Devices(ctx)
	switch {
	case errors.Is(err, ErrNoDriver):
		return Summary{Reason: err.Error(), Devices: []Device{}}
	case err != nil:
		return Summary{Reason: "gpu inventory: " + err.Error(), Devices: []Device{}}
	case len(devs) == 0:
		return Summary{Reason: "no GPUs found", Devices: []Device{}}
	}
	return Summary{Available: true, Devices: devs}
}

// Print writes r as a table for people: one row per GPU and per MIG
// instance, or the reason there are none.
func Print(w io.Writer, r Summary) error {
	if !r.Available {
		_, err := fmt.Fprintf(w, "GPUs unavailable: %s\n", r.Reason)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INDEX\tUUID\tNAME\tMEMORY USED/TOTAL\tUTIL\tMIG")
	for _, d := range r.Devices {
		util := "n/a"
		if d.UtilizationPct >= 0 {
			util = strconv.Itoa(d.UtilizationPct) + "%"
		}
		mig := "off"
		if d.MIGEnabled {
			mig = fmt.Sprintf("on (%d)", len(d.MIGDevices))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d MiB\t%s\t%s\n", d.Index, d.UUID, d.Name, d.MemoryUsedMiB, d.MemoryTotalMiB, util, mig)
		for j, m := range d.MIGDevices {
			fmt.Fprintf(tw, "%d.%d\t%s\t(MIG instance)\t%d/%d MiB\t\t\n", d.Index, j, m.UUID, m.MemoryUsedMiB, m.MemoryTotalMiB)
		}
	}
	return tw.Flush()
}
