package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// errorBody is the JSON every error answer carries.
type errorBody struct {
	Error  string `json:"error"`
	Detail string `json:"detail,omitempty"`
}

// httpError is an error that knows its HTTP status.
type httpError struct {
	status int
	msg    string
	detail string
}

func (e *httpError) Error() string {
	if e.detail == "" {
		return e.msg
	}
	return e.msg + ": " + e.detail
}

func errorf(status int, msg, detailFormat string, args ...any) *httpError {
	return &httpError{status: status, msg: msg, detail: fmt.Sprintf(detailFormat, args...)}
}

// storeStatus maps the rule store's error codes to HTTP statuses.
var storeStatus = map[string]int{
	"invalid":     http.StatusBadRequest,
	"too_wide":    http.StatusUnprocessableEntity,
	"allowlisted": http.StatusConflict,
	"full":        http.StatusInsufficientStorage,
	"not_found":   http.StatusNotFound,
	"storage":     http.StatusInternalServerError,
}

// storeMessage is the headline for each store error code; the store's own
// text goes into detail.
var storeMessage = map[string]string{
	"invalid":     "invalid request",
	"too_wide":    "prefix wider than the safety guard allows; resend with force to override (audited)",
	"allowlisted": "covered by the allowlist; remove the allowlist entry or resend with force (audited)",
	"full":        "rule store is full; remove entries or raise the entry cap",
	"not_found":   "no such entry",
	"storage":     "the rule store could not save the change",
}

// fromStore turns an error from Rules or Sensor into an httpError.
func fromStore(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	var c coder
	if errors.As(err, &c) {
		if st, ok := storeStatus[c.Code()]; ok {
			return &httpError{status: st, msg: storeMessage[c.Code()], detail: err.Error()}
		}
	}
	return &httpError{status: http.StatusInternalServerError, msg: "internal error", detail: err.Error()}
}

// decodeError explains why a JSON body could not be decoded, naming the
// field or the byte offset.
func decodeError(err error) *httpError {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &mbe):
		return errorf(http.StatusRequestEntityTooLarge, "request body too large", "limit is %d bytes", mbe.Limit)
	case errors.Is(err, io.EOF):
		return errorf(http.StatusBadRequest, "empty request body", "send a JSON object")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, "malformed JSON", "body ends in the middle of a value")
	case errors.As(err, &se):
		return errorf(http.StatusBadRequest, "malformed JSON", "%s at byte %d", se.Error(), se.Offset)
	case errors.As(err, &te):
		if te.Field == "" {
			return errorf(http.StatusBadRequest, "malformed JSON", "want a JSON object, got %s", te.Value)
		}
		return errorf(http.StatusBadRequest, "wrong type for field "+quote(te.Field), "got %s, want %s", te.Value, jsonKind(te.Type.Kind().String()))
	}
	if f, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return errorf(http.StatusBadRequest, "unknown field "+f, "remove it; see the API documentation for the fields this endpoint takes")
	}
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	return errorf(http.StatusBadRequest, "malformed JSON", "%v", err)
}

func quote(s string) string { return `"` + s + `"` }

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "struct", "map":
		return "an object"
	case "slice", "array":
		return "an array"
	default:
		return "a number"
	}
}
