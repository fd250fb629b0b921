"""The limits of `zoo serve`: module constants, read when each request is served (a test may set them)."""

# 20 MiB: a 25 MB upload is refused with 413 before the body is read (or as soon as it passes the limit).
MAX_REQUEST_BYTES = 20 * 1024 * 1024
MAX_FILES = 64
# The server's decode budget per image (width x height, read from the header before decoding): 25 Mpx takes a
# 6000 x 4000 camera photo; `zoo serve --max-pixels` changes it.
MAX_PIXELS = 25_000_000
MAX_K = 100                      # neighbours in one search answer
MAX_TEXT_CHARS = 1000            # a search by words
MAX_LABEL_CHARS = 100            # a class name
MAX_NAME_CHARS = 100             # a file name as kept and echoed (its suffix is kept)
# A support zip: members listed, bytes of one member and of all, as read (never as the zip claims), and the
# largest expansion of a member past 1 MB (an image file compresses little; a bomb by orders of magnitude).
MAX_ZIP_MEMBERS = 1000
MAX_ZIP_MEMBER_BYTES = 16 * 1024 * 1024
MAX_ZIP_TOTAL_BYTES = 64 * 1024 * 1024
MAX_ZIP_RATIO = 100
GALLERIES_CACHED = 8             # server galleries whose embeddings and thumbnails stay in memory
THUMBNAIL_SIDE = 160
HEADER_TIMEOUT_S = 10            # a connection that has not sent a request's headers by then is closed
LOOPBACK = ("127.0.0.1", "localhost", "::1")
