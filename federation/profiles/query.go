package profiles

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/internal/mxid"
)

// maxProfileBytes is the spec's limit on a whole profile: a larger answer
// is no profile.
const maxProfileBytes = 64 << 10

// queryError is a failed query with its result label for the metrics.
type queryError struct {
	result string // not_found, forbidden, unreachable or error
	err    error
}

// noAnswer is a failure of result "unreachable" or "error".
func noAnswer(result string, err error) *queryError {
	return &queryError{result, fmt.Errorf("%w: %w", ErrNoAnswer, err)}
}

func (e *queryError) Error() string { return e.err.Error() }
func (e *queryError) Unwrap() error { return e.err }

// resultOf is the metrics' label of a query's outcome.
func resultOf(err error) string {
	var q *queryError
	switch {
	case err == nil:
		return "found"
	case errors.As(err, &q):
		return q.result
	}
	return "error"
}

// query asks user's server for every field of user's profile.
func (c *Cache) query(ctx context.Context, user string) (map[string]json.RawMessage, error) {
	server := mxid.ServerOf(user)
	if server == "" {
		return nil, noAnswer("error", fmt.Errorf("no server in user ID %q", user))
	}
	id := c.opts.Identity
	req := fclient.NewFederationRequest(http.MethodGet, id.ServerName, spec.ServerName(server),
		"/_matrix/federation/v1/query/profile?user_id="+url.QueryEscape(user))
	if err := req.Sign(id.ServerName, id.KeyID, id.PrivateKey); err != nil {
		return nil, noAnswer("error", fmt.Errorf("sign the query: %w", err))
	}
	hreq, err := req.HTTPRequest()
	if err != nil {
		return nil, noAnswer("error", err)
	}
	var raw json.RawMessage
	if err := c.opts.Client.DoRequestAndParseResponse(ctx, hreq, &raw); err != nil {
		return nil, classify(server, err)
	}
	if len(raw) > maxProfileBytes {
		return nil, noAnswer("error", fmt.Errorf("%s answered a profile of %d bytes, more than the %d allowed", server, len(raw), maxProfileBytes))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, noAnswer("error", fmt.Errorf("%s answered no JSON object", server))
	}
	return fields, nil
}

// classify is the failure of a query to server: the server's 404 and 403
// as ErrNotFound and ErrForbidden, another answer as an error, no answer
// (its cause kept) as unreachable.
func classify(server string, err error) error {
	var he gomatrix.HTTPError
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &he) && he.Code == http.StatusNotFound:
		return &queryError{"not_found", ErrNotFound}
	case errors.As(err, &he) && he.Code == http.StatusForbidden:
		return &queryError{"forbidden", ErrForbidden}
	case errors.As(err, &he):
		return noAnswer("error", fmt.Errorf("%s answered %d", server, he.Code))
	case errors.As(err, &syntax), errors.As(err, &typ):
		return noAnswer("error", fmt.Errorf("%s answered no JSON: %w", server, err))
	}
	return noAnswer("unreachable", fmt.Errorf("query %s: %w", server, err))
}
