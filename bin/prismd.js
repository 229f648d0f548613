#!/usr/bin/env node
import { main } from '../dist/src/daemon/prismd.js';

await main(process.argv);
