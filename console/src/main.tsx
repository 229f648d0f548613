import '@xterm/xterm/css/xterm.css';
import './styles.css';
import { render } from 'preact';
import { App } from './app.js';
import { stampStyleNonce } from './csp-styles.js';
import { Session } from './session.js';

stampStyleNonce(document);
const session = new Session(sessionStorage, { url: location.origin });
render(<App session={session} />, document.getElementById('app')!);
