package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"unicode/utf8"
)

// readBody reads a request body of at most limit bytes.
func readBody(r *http.Request, limit int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if int64(len(body)) > limit {
		return nil, errTooLarge
	}
	if err != nil {
		return nil, badRequest("Could not read the request body.")
	}
	return body, nil
}

// readObject reads a JSON object body: M_NOT_JSON when it is not JSON,
// M_BAD_JSON when it is JSON but not an object.
func (s *Server) readObject(r *http.Request) (map[string]json.RawMessage, error) {
	body, err := readBody(r, s.cfg.Limits.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	if !json.Valid(body) || !utf8.Valid(body) {
		return nil, errNotJSON
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
		return nil, badJSON("Body must be a JSON object.")
	}
	return obj, nil
}

// decode reads a JSON object body into v: M_NOT_JSON or M_BAD_JSON (a field
// of the wrong type) on bad input. An empty body counts as {} when allowEmpty.
func (s *Server) decode(r *http.Request, v any, allowEmpty bool) error {
	body, err := readBody(r, s.cfg.Limits.MaxRequestBytes)
	if err != nil {
		return err
	}
	return decodeBytes(body, v, allowEmpty)
}

// decodeBytes is decode for a body already read.
func decodeBytes(body []byte, v any, allowEmpty bool) error {
	if allowEmpty && len(bytes.TrimSpace(body)) == 0 {
		body = []byte("{}")
	}
	if !json.Valid(body) || !utf8.Valid(body) {
		return errNotJSON
	}
	if bytes.TrimSpace(body)[0] != '{' {
		return badJSON("Body must be a JSON object.")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return badJSON("Field " + te.Field + " has the wrong type.")
		}
		return badJSON("Body does not match the expected shape.")
	}
	return nil
}
