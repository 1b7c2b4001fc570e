package filters

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	flowpb "github.com/cilium/cilium/api/v1/flow"
)

// HTTP filters look at the flow's L7 record. They are validated now and
// match once L7 flows exist; L3/L4 flows never match them.

var (
	httpCodeFull   = regexp.MustCompile(`^[1-5][0-9]{2}$`)
	httpCodePrefix = regexp.MustCompile(`^[1-5][0-9]?\+$`)
)

func compileRegexps(field string, exprs []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(exprs))
	for _, e := range exprs {
		re, err := regexp.Compile(e)
		if err != nil {
			return nil, fieldErrf(field, "%q: %w", e, err)
		}
		out = append(out, re)
	}
	return out, nil
}

func anyMatch(res []*regexp.Regexp, s string) bool {
	for _, re := range res {
		if re.MatchString(s) {
			return true
		}
	}
	return false
}

func buildHTTP(ff *flowpb.FlowFilter) ([]FilterFunc, error) {
	var fs []FilterFunc
	if codes := ff.GetHttpStatusCode(); len(codes) > 0 {
		var full, prefix []string
		for _, c := range codes {
			switch {
			case httpCodeFull.MatchString(c):
				full = append(full, c)
			case httpCodePrefix.MatchString(c):
				prefix = append(prefix, strings.TrimSuffix(c, "+"))
			default:
				return nil, fieldErrf("http_status_code", "invalid status code %q", c)
			}
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			h := f.GetL7().GetHttp()
			if h == nil || h.Code == 0 {
				return false
			}
			code := fmt.Sprintf("%03d", h.Code)
			for _, c := range full {
				if c == code {
					return true
				}
			}
			for _, p := range prefix {
				if strings.HasPrefix(code, p) {
					return true
				}
			}
			return false
		})
	}
	if methods := ff.GetHttpMethod(); len(methods) > 0 {
		fs = append(fs, func(f *flowpb.Flow) bool {
			h := f.GetL7().GetHttp()
			if h == nil || h.Method == "" {
				return false
			}
			for _, m := range methods {
				if strings.EqualFold(m, h.Method) {
					return true
				}
			}
			return false
		})
	}
	if exprs := ff.GetHttpPath(); len(exprs) > 0 {
		res, err := compileRegexps("http_path", exprs)
		if err != nil {
			return nil, err
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			h := f.GetL7().GetHttp()
			if h == nil || h.Url == "" {
				return false
			}
			u, err := url.ParseRequestURI(h.Url)
			return err == nil && anyMatch(res, u.Path)
		})
	}
	if exprs := ff.GetHttpUrl(); len(exprs) > 0 {
		res, err := compileRegexps("http_url", exprs)
		if err != nil {
			return nil, err
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			h := f.GetL7().GetHttp()
			return h != nil && h.Url != "" && anyMatch(res, h.Url)
		})
	}
	if hdrs := ff.GetHttpHeader(); len(hdrs) > 0 {
		for _, h := range hdrs {
			if h.GetKey() == "" {
				return nil, fieldErrf("http_header", "empty header name")
			}
		}
		fs = append(fs, func(f *flowpb.Flow) bool {
			for _, have := range f.GetL7().GetHttp().GetHeaders() {
				for _, w := range hdrs {
					if w.GetKey() == have.GetKey() && w.GetValue() == have.GetValue() {
						return true
					}
				}
			}
			return false
		})
	}
	return fs, nil
}
