// Command twincheck drives the forkscale twin with govmomi the way govc, the community.vmware
// Ansible modules, the Terraform vSphere provider and the pyVmomi community samples drive a real
// vCenter: a table of everyday operations, each a named function that returns details and an
// error when what came back is not what a real vCenter returns.
//
// Every operation runs on its own goroutine under its own timeout, with panics recovered, so a
// twin that hangs or answers something a Go client cannot decode shows up as one failed
// operation, never as a stuck or crashed program. Operations run in table order; later ones may
// use what earlier ones made, but a failure in one never stops the others. The program prints
// one JSON document, {"order": [...], "results": {"op": {"ok", "detail", "error", "ms"}}}, and
// exits 0 whenever it could print it.
//
// Built in GOPATH mode against Debian's golang-github-vmware-govmomi-dev (see
// tests/test_twin_govmomi.py).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"runtime/debug"
	"strings"
	"time"
)

type opFunc func(ctx context.Context, e *env) (interface{}, error)

type op struct {
	name string
	fn   opFunc
}

type result struct {
	OK     bool        `json:"ok"`
	Detail interface{} `json:"detail,omitempty"`
	Error  string      `json:"error,omitempty"`
	Ms     int64       `json:"ms"`
}

// table lists every operation in the order it runs: reads before the operations that add VMs,
// history (events, tasks) after the operations that make some, the session's end last.
func table() []op {
	var t []op
	for _, group := range [][]op{sessionOps(), findOps(), searchOps(), readOps(), viewOps(), perfOps(),
		vmOps(), vappOps(), guestOps(), datastoreOps(), hostOps(), collectorOps(), historyOps(), faultOps(),
		unsupportedOps(), endOps()} {
		t = append(t, group...)
	}
	return t
}

func runOne(e *env, o op, timeout time.Duration) (res result) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	type outcome struct {
		detail interface{}
		err    error
	}
	done := make(chan outcome, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				stack := strings.Split(string(debug.Stack()), "\n")
				if len(stack) > 12 {
					stack = stack[:12]
				}
				done <- outcome{nil, fmt.Errorf("panic: %v [%s]", r, strings.Join(stack, " | "))}
			}
		}()
		d, err := o.fn(ctx, e)
		done <- outcome{d, err}
	}()
	var out outcome
	select {
	case out = <-done:
	case <-time.After(timeout + 2*time.Second):
		out = outcome{nil, fmt.Errorf("timed out after %s (the call never returned)", timeout)}
	}
	res = result{OK: out.err == nil, Detail: out.detail, Ms: time.Since(start).Milliseconds()}
	if out.err != nil {
		msg := out.err.Error()
		if ctx.Err() == context.DeadlineExceeded && !strings.Contains(msg, "timed out") {
			msg = fmt.Sprintf("timed out after %s: %s", timeout, msg)
		}
		res.Error = msg
	}
	return res
}

func main() {
	cfg := config{}
	flag.StringVar(&cfg.url, "url", "", "the twin's /sdk URL")
	flag.StringVar(&cfg.ca, "ca", "", "the twin's CA file (PEM)")
	flag.StringVar(&cfg.user, "user", "", "user name")
	flag.StringVar(&cfg.guestUser, "guest-user", "root", "guest operations user")
	timeout := flag.Duration("op-timeout", 20*time.Second, "time limit of one operation")
	only := flag.String("only", "", "comma-separated operation names to run (default: all)")
	flag.Parse()
	cfg.password = os.Getenv("TWIN_PASSWORD")
	cfg.guestPassword = os.Getenv("TWIN_GUEST_PASSWORD")

	e := newEnv(cfg)
	wanted := map[string]bool{}
	for _, n := range strings.Split(*only, ",") {
		if n != "" {
			wanted[n] = true
		}
	}
	order := []string{}
	results := map[string]result{}
	for _, o := range table() {
		if len(wanted) > 0 && !wanted[o.name] && o.name != "session.login" {
			continue
		}
		order = append(order, o.name)
		results[o.name] = runOne(e, o, *timeout)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", " ")
	if err := enc.Encode(map[string]interface{}{"order": order, "results": results}); err != nil {
		fmt.Fprintf(os.Stderr, "twincheck: encode: %v\n", err)
		os.Exit(1)
	}
}
