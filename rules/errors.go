package rules

import (
	"errors"
	"net/http"
)

// ErrCode classifies a refusal so the API can map it to an HTTP status.
type ErrCode string

const (
	CodeInvalid     ErrCode = "invalid"     // malformed request (HTTP 400)
	CodeTooWide     ErrCode = "too_wide"    // prefix wider than the configured limit, or an ACL matching everything (HTTP 422)
	CodeAllowlisted ErrCode = "allowlisted" // the ban touches an allowlist entry (HTTP 409)
	CodeFull        ErrCode = "full"        // the entry cap is reached (HTTP 507)
	CodeNotFound    ErrCode = "not_found"   // no such entry (HTTP 404)
	CodeStorage     ErrCode = "storage"     // the change is in force but could not be made durable (HTTP 500)
)

// Error is a refusal (or a persistence failure) from the Store. Msg is meant
// for the operator as is: it says what was refused and what to do.
//
// The class is in the field ErrCode (not Code: a field and a method cannot
// share a name in Go, and the API looks for the method Code() string).
type Error struct {
	ErrCode ErrCode
	Msg     string
	Entry   *Entry // the entry involved: the allowlist entry that refused a ban, the entry that was added but not persisted; may be nil
}

// Error returns the operator-facing message.
func (e *Error) Error() string { return e.Msg }

// Code is the class as a string: "invalid", "too_wide", "allowlisted",
// "full", "not_found" or "storage". The API maps it to an HTTP status.
func (e *Error) Code() string { return string(e.ErrCode) }

// HTTPStatus is the HTTP status code the API should answer with.
func (e *Error) HTTPStatus() int {
	switch e.ErrCode {
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeTooWide:
		return http.StatusUnprocessableEntity
	case CodeAllowlisted:
		return http.StatusConflict
	case CodeFull:
		return http.StatusInsufficientStorage
	case CodeNotFound:
		return http.StatusNotFound
	}
	return http.StatusInternalServerError
}

// CodeOf returns the ErrCode of err if it is (or wraps) an *Error, and ""
// otherwise.
func CodeOf(err error) ErrCode {
	var e *Error
	if errors.As(err, &e) {
		return e.ErrCode
	}
	return ""
}

func errf(code ErrCode, entry *Entry, msg string) *Error {
	return &Error{ErrCode: code, Msg: msg, Entry: entry}
}
