package bus

// SubjectMatches reports whether subject matches a NATS pattern with '*'
// and '>' wildcards: readers of the streams (campaign status) attribute a
// consumer's filter subjects to homes with it.
func SubjectMatches(pattern, subject string) bool { return subjectMatches(pattern, subject) }

// NoMessage reports the error of a stream message that is not there (any
// more): a subject never written, a message removed.
func NoMessage(err error) bool { return noMessage(err) }
