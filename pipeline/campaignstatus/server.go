package campaignstatus

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

//go:embed page.html
var page []byte

// Handler serves the status page at /campaign and its data at
// /campaign/status.json, which the page polls.
//
// It answers only requests a browser could make from the page itself: a
// request with an Origin header of another origin (any web page the user
// visits can make the browser send one to a loopback port) is refused, and
// so is a Host that is not an address or localhost, which keeps a DNS
// rebinding page, whose Origin would be its own name, out as well.
func Handler(w *Watcher) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /campaign", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html; charset=utf-8")
		rw.Header().Set("Content-Security-Policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:")
		_, _ = rw.Write(page)
	})
	mux.HandleFunc("GET /campaign/status.json", func(rw http.ResponseWriter, r *http.Request) {
		rep, err := w.Collect(r.Context())
		if err != nil {
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		rw.Header().Set("Content-Type", "application/json")
		rw.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(rw).Encode(rep)
	})
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		if !localHost(r.Host) {
			http.Error(rw, "refused: the status page answers only on a loopback address or localhost", http.StatusForbidden)
			return
		}
		if o := r.Header.Get("Origin"); o != "" && o != "http://"+r.Host {
			http.Error(rw, "refused: cross-origin request", http.StatusForbidden)
			return
		}
		mux.ServeHTTP(rw, r)
	})
}

// localHost reports whether a Host header names an IP address or
// localhost (with a port or without).
func localHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	return host == "localhost" || net.ParseIP(host) != nil
}

// WriteText prints a report as tables: one row per home and tap, then the
// consumers' lag.
func WriteText(out io.Writer, r *Report) error {
	tw := tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "CAMPAIGN\tHOME\tTAP\tSESSION\tOFFSET\tPKT/S\tWINDOWS\tPAIRING\tSEEN\tLAST ERROR")
	for _, h := range r.Homes {
		taps := h.Taps
		if len(taps) == 0 {
			taps = []Tap{{Name: "-"}}
		}
		for i, t := range taps {
			session, offset := t.Session, fmt.Sprint(t.Offset)
			if session == "" {
				session, offset = "-", "-"
			} else if t.Final {
				session += " (ended)"
			}
			rate := "-"
			if t.PacketsPerSec != nil {
				rate = fmt.Sprintf("%.1f", *t.PacketsPerSec)
			}
			windows, pairing, seen, lastErr := "", "", "", ""
			if i == 0 {
				windows = fmt.Sprintf("%d in %d sessions", h.Windowed.Windows, h.Windowed.Sessions)
				if h.Windowed.CutShort > 0 {
					windows += fmt.Sprintf(" (%d cut short)", h.Windowed.CutShort)
				}
				pairing = "-"
				if h.Pairing != nil && h.Pairing.Rate != nil {
					pairing = fmt.Sprintf("%.1f %%", 100**h.Pairing.Rate)
				}
				seen = devices(h)
				lastErr = "-"
				if e := h.LastError; e != nil {
					lastErr = fmt.Sprintf("%s %s: %s", e.FailedAt.Format("2006-01-02 15:04:05"), e.Subject, e.Reason)
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", h.Campaign, h.Home, t.Name, session, offset, rate, windows, pairing, seen, lastErr)
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(r.Homes) == 0 {
		fmt.Fprintln(out, "no homes: the PACKETS stream holds no batch of this campaign yet")
	}
	fmt.Fprintln(out)
	tw = tabwriter.NewWriter(out, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "STREAM\tCONSUMER\tPENDING\tACK PENDING\tFILTERS")
	for _, c := range r.Consumers {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", c.Stream, c.Name, c.Pending, c.AckPending, strings.Join(c.Filters, " "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.RateOver > 0 {
		fmt.Fprintf(out, "packet rates over %s\n", time.Duration(r.RateOver).Round(time.Millisecond))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(out, "note: %s\n", n)
	}
	return nil
}

// devices renders a home's newest detections: "camera x2, plug".
func devices(h Home) string {
	if h.Seen == nil {
		return "-"
	}
	ds := append(h.Seen.Detections[:0:0], h.Seen.Detections...)
	sort.Slice(ds, func(i, j int) bool { return ds[i].Device < ds[j].Device })
	var parts []string
	for _, d := range ds {
		if d.Count > 1 {
			parts = append(parts, fmt.Sprintf("%s x%d", d.Device, d.Count))
		} else {
			parts = append(parts, d.Device)
		}
	}
	out := strings.Join(parts, ", ")
	if len(parts) == 0 {
		out = "none"
	}
	if h.Seen.Method == "hosts" {
		// The LAN host counter's window: how many hosts it saw besides.
		counted := 0
		for _, d := range ds {
			counted += d.Count
		}
		out += fmt.Sprintf(" (LAN hosts: %d of %d active counted)", counted, h.Seen.Hosts)
	}
	if h.Seen.Method == "ip-id" {
		// The same counter on a wan tap: units told apart by their IP ID
		// sequences, only of the types that number all they send from one
		// counter.
		out += " (beyond the gateway, by IP ID sequences)"
	}
	return out
}
