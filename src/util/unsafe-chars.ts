/**
 * Characters never kept in sender-chosen names (attachment filenames, Content-Type, Content-ID):
 * C0 and C1 controls, DEL, and the bidi marks, overrides and isolates (U+061C, U+200E/F,
 * U+202A-E, U+2066-9) that make "gpj.exe" display as "exe.jpg". A CR or LF would also split a
 * log line or a Content-Disposition header when the name is served again.
 * One definition for the parser (metadata) and the HTTP download (the offered name).
 */
export const UNSAFE_CHARS = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
