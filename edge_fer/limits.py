"""Size limits on frames and photos, decided once: the detector refuses frames beyond the
frame limits, and the image readers skip photos that could not be scanned within them."""

MAX_FRAME_SIDE = 16384  # px, either side of a frame the detector scans
MAX_FRAME_PIXELS = 1 << 27  # 134 Mpx: beyond this a frame is a mistake, not a photo
# Photos above this are skipped unread: decoding one allocates width x height x 3 bytes before
# anything can be checked (a 40000x40000 PNG of a few KB would take 4.8 GB). 100 Mpx is above
# every camera's normal output.
MAX_IMAGE_PIXELS = 100_000_000
