#!/usr/bin/env node
import { main } from '../dist/src/cli/prismctl.js';

// `prismctl ... | head` closes the pipe early; that is not an error worth a stack trace.
process.stdout.on('error', (e) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const code = await main(process.argv);
// Exit only once buffered output is written: process.exit() drops what a slow pipe has not taken yet.
process.stdout.write('', () => process.exit(code));
