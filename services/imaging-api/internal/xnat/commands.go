package xnat

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Command is a Container Service command and the wrapper FLIP runs.
type Command struct {
	ID      int
	Wrapper string
}

type commandJSON struct {
	ID    int    `json:"id"`
	Name  string `json:"name"`
	Image string `json:"image"`
	XNAT  []struct {
		Name string `json:"name"`
	} `json:"xnat"`
}

// FindCommand returns the first command registered for image and its first
// wrapper. When none is registered the error (ErrCommandNotFound, under
// 1000 characters) names the commands XNAT does have, or says why they
// could not be listed.
func (cl *Client) FindCommand(ctx context.Context, image string) (Command, error) {
	var cmds []commandJSON
	if _, err := cl.doJSON(ctx, call{op: "find command", method: http.MethodGet, path: []string{"xapi", "commands"},
		query: url.Values{"image": {image}}}, &cmds); err != nil {
		return Command{}, err
	}
	if len(cmds) > 0 {
		if len(cmds[0].XNAT) == 0 || cmds[0].XNAT[0].Name == "" {
			return Command{}, fmt.Errorf("command %d for image %s has no 'xnat' wrapper: %w", cmds[0].ID, image, ErrCommandNotFound)
		}
		return Command{ID: cmds[0].ID, Wrapper: cmds[0].XNAT[0].Name}, nil
	}
	return Command{}, cl.commandDiagnosis(ctx, image)
}

func (cl *Client) commandDiagnosis(ctx context.Context, image string) error {
	var all []commandJSON
	_, err := cl.doJSON(ctx, call{op: "list commands", method: http.MethodGet, path: []string{"xapi", "commands"}}, &all)
	var msg string
	switch {
	case errors.Is(err, ErrUnauthorized):
		msg = "listing commands was refused (401): the service account session is not accepted"
	case errors.Is(err, ErrForbidden):
		msg = "listing commands was refused (403): the service account needs the ContainerManager or Administrator role"
	case err != nil:
		msg = "listing commands failed: " + err.Error()
	case len(all) == 0:
		msg = "no commands are registered (run the dcm2niix configuration)"
	default:
		names := make([]string, 0, len(all))
		for _, c := range all {
			names = append(names, c.Name+" ("+c.Image+")")
		}
		msg = "registered: " + strings.Join(names, ", ")
	}
	out := fmt.Sprintf("no command uses image %s; %s", image, msg)
	if len(out) > 900 {
		out = out[:900] + "..."
	}
	return fmt.Errorf("%s: %w", out, ErrCommandNotFound)
}

// EnableCommand enables a command's wrapper for a project, which XNAT
// requires before a project subscription may name the command.
func (cl *Client) EnableCommand(ctx context.Context, project string, cmd Command) error {
	_, err := cl.doJSON(ctx, call{op: "enable command", method: http.MethodPut,
		path: []string{"xapi", "projects", project, "commands", strconv.Itoa(cmd.ID), "wrappers", cmd.Wrapper, "enabled"}}, nil)
	return err
}

// ConversionSubscription is the project event subscription that runs cmd
// on every new scan carrying a DICOM resource.
func ConversionSubscription(project string, cmd Command, active bool) map[string]any {
	return map[string]any{
		"name":           "DICOM-NIfTI Conversion",
		"event-selector": "org.nrg.xnat.eventservice.events.ScanEvent:CREATED",
		"action-key":     "org.nrg.containers.services.CommandActionProvider:" + strconv.Itoa(cmd.ID),
		"attributes":     map[string]any{},
		"active":         active,
		"event-filter": map[string]any{
			"event-type":     "org.nrg.xnat.eventservice.events.ScanEvent",
			"status":         "CREATED",
			"project-ids":    []string{project},
			"payload-filter": `(@.resources.length() > 0 && "DICOM" in @.resources[*].label)`,
		},
		"act-as-event-user": false,
	}
}

// SubscribeConversion enables cmd for the project and creates the
// project's DICOM→NIfTI subscription, active or created inactive.
func (cl *Client) SubscribeConversion(ctx context.Context, project string, cmd Command, active bool) error {
	if err := cl.EnableCommand(ctx, project, cmd); err != nil {
		return err
	}
	c, err := jsonCall("create subscription", http.MethodPost, ConversionSubscription(project, cmd, active),
		"xapi", "projects", project, "events", "subscription")
	if err != nil {
		return err
	}
	c.ok = []int{http.StatusOK, http.StatusCreated}
	_, err = cl.doJSON(ctx, c, nil)
	return err
}
