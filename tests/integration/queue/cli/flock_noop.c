/* LD_PRELOAD shim: flock always succeeds, as on a CIFS mount with nobrl or
 * an old kernel that never sent flock to the server. */
int flock(int fd, int operation) {
  (void)fd;
  (void)operation;
  return 0;
}
