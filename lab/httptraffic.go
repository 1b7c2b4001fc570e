package lab

import (
	"context"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// httpClients are keep-alive HTTP clients, one per source pod netns, so lab
// traffic reuses connections as real clients do.
var httpClients sync.Map // netns path -> *http.Client

func httpClientIn(netnsPath string) *http.Client {
	if c, ok := httpClients.Load(netnsPath); ok {
		return c.(*http.Client)
	}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return dialIn(ctx, netnsPath, "tcp4", addr, 2*time.Second)
		},
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}
	c, _ := httpClients.LoadOrStore(netnsPath, &http.Client{Transport: tr, Timeout: 3 * time.Second})
	return c.(*http.Client)
}

// trafficHTTPPath mostly asks for a page, sometimes for an error or a slow
// answer (the pod servers' /status/<code> and /delay/<ms>).
func trafficHTTPPath() string {
	switch n := rand.IntN(100); {
	case n < 8:
		return "/status/404"
	case n < 12:
		return "/status/500"
	case n < 20:
		return "/delay/" + strconv.Itoa(50+rand.IntN(250))
	default:
		return "/"
	}
}

// sendHTTP makes one keep-alive request from src's netns; any status counts
// as an answer.
func sendHTTP(ctx context.Context, f flow) bool {
	url := "http://" + net.JoinHostPort(f.dst.IP, strconv.Itoa(f.port)) + trafficHTTPPath()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := httpClientIn(f.src.netnsPath()).Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return true
}
